//! Finding and running esptool (and espsecure, from the same install).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::ImageInfo;

/// The esptool installed by `scripts/test.sh` (`ensure_esptool`).
pub struct Esptool {
    exe: PathBuf,
    python: PathBuf,
}

impl Esptool {
    /// `OTA_ESPTOOL`, else `target/tools-venv/bin/esptool`; panics with what
    /// to do when neither exists, so that these tests never pass unrun.
    pub fn find() -> Esptool {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let exe = std::env::var_os("OTA_ESPTOOL")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace.join("target/tools-venv/bin/esptool"));
        assert!(
            exe.is_file(),
            "esptool not found at {} (set OTA_ESPTOOL, or run scripts/test.sh once: it installs esptool 5 into \
             target/tools-venv)",
            exe.display()
        );
        let python = interpreter_of(&exe)
            .or_else(|| exe.parent().map(|bin| bin.join("python3")).filter(|p| p.is_file()))
            .unwrap_or_else(|| panic!("cannot tell which Python runs {}", exe.display()));
        Esptool { exe, python }
    }

    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        quiet(Command::new(&self.exe))
            .args(args)
            .output()
            .expect("esptool runs")
    }

    /// Runs a Python script with esptool's interpreter (for espsecure and
    /// for esptool functions that have no command).
    pub fn python<S: AsRef<OsStr>>(&self, script: &str, args: &[S]) -> Output {
        quiet(Command::new(&self.python))
            .arg("-c")
            .arg(script)
            .args(args)
            .output()
            .expect("python runs")
    }

    /// `esptool --chip <chip> elf2image` with the header options our tests use.
    pub fn elf2image(&self, chip: &str, flash_freq: &str, revs: (u16, u16), elf: &Path, out: &Path) {
        let (min, max) = (revs.0.to_string(), revs.1.to_string());
        let options = [
            "--chip",
            chip,
            "elf2image",
            "--flash-mode",
            "dio",
            "--flash-freq",
            flash_freq,
            "--flash-size",
        ];
        let mut args: Vec<&OsStr> = options.iter().map(OsStr::new).collect();
        args.extend(
            [
                "16MB",
                "--min-rev-full",
                min.as_str(),
                "--max-rev-full",
                max.as_str(),
                "-o",
            ]
            .map(OsStr::new),
        );
        args.extend([out.as_os_str(), elf.as_os_str()]);
        let output = self.run(&args);
        assert!(
            output.status.success(),
            "elf2image for {chip} failed:\n{}",
            text(&output)
        );
    }

    /// `esptool [--chip <chip>] image-info <image>`: the report, or what
    /// esptool said when it gave up (non-zero exit).
    pub fn image_info(&self, chip: Option<&str>, image: &Path) -> Result<ImageInfo, String> {
        let mut args: Vec<&OsStr> = Vec::new();
        if let Some(chip) = chip {
            args.extend([OsStr::new("--chip"), chip.as_ref()]);
        }
        args.extend([OsStr::new("image-info"), image.as_os_str()]);
        let output = self.run(&args);
        if !output.status.success() {
            return Err(text(&output));
        }
        Ok(ImageInfo::read(&String::from_utf8_lossy(&output.stdout)))
    }

    /// `espsecure <args> <paths>`.
    pub fn espsecure(&self, args: &[&str], paths: &[&Path]) {
        let mut all: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        all.extend(paths.iter().map(|p| p.as_os_str()));
        let output = self.python(
            "import sys, espsecure; sys.argv[0] = 'espsecure'; sys.exit(espsecure._main())",
            &all,
        );
        assert!(output.status.success(), "espsecure {args:?}: {}", text(&output));
    }

    /// For each (chip, revision, image), what esptool says before it
    /// flashes the image on such a chip: `compatible`, or why not (from
    /// `_get_image_incompatibility`, behind write-flash's "is not an
    /// ESP32-S3 image"; image-info has no such check). The chip is a
    /// stand-in: nothing is connected.
    pub fn flash_check(&self, checks: &[(String, u16, &Path)]) -> Vec<String> {
        let args: Vec<String> = checks
            .iter()
            .map(|(chip, rev, path)| format!("{chip}:{rev}:{}", path.display()))
            .collect();
        let output = self.python(FLASH_CHECK, &args);
        assert!(output.status.success(), "esptool's flash check: {}", text(&output));
        let verdicts: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(verdicts.len(), checks.len(), "{}", text(&output));
        verdicts
    }
}

const FLASH_CHECK: &str = "\
import sys
from esptool.bin_image import LoadFirmwareImage
from esptool.cmds import _get_image_incompatibility
from esptool.targets import CHIP_DEFS
for arg in sys.argv[1:]:
    chip, rev, path = arg.split(':', 2)
    rev = int(rev)
    class Connected(CHIP_DEFS[chip]):
        def __init__(self): pass
        def get_chip_revision(self): return rev
        def get_major_chip_version(self): return rev // 100
        def get_minor_chip_version(self): return rev % 100
    image = LoadFirmwareImage(chip, open(path, 'rb').read())
    print(_get_image_incompatibility(Connected(), image, None) or 'compatible')
";

/// The interpreter on a pip entry point's `#!` line.
fn interpreter_of(script: &Path) -> Option<PathBuf> {
    let head = std::fs::read(script).ok()?;
    let first = head.split(|&b| b == b'\n').next()?;
    let path = PathBuf::from(std::str::from_utf8(first.strip_prefix(b"#!")?).ok()?.trim());
    path.is_file().then_some(path)
}

/// No colours, no wrapping: output meant for a parser.
fn quiet(mut command: Command) -> Command {
    command
        .env("NO_COLOR", "1")
        .env("TERM", "dumb")
        .env("COLUMNS", "500")
        .env_remove("FORCE_COLOR");
    command
}

pub fn text(output: &Output) -> String {
    format!(
        "exit {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
