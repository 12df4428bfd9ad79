//! `otactl`: see `otactl --help`, `docs/cli.md`.

fn main() {
    std::process::exit(otactl::run());
}
