//! The version vectors the ESP-IDF client's C core is also tested against
//! (`clients/esp-idf/host/tests/version_vectors.txt`): the server and the
//! device must agree on which build is newer, or a device would refuse what
//! it is offered (or take what it should not).

use std::cmp::Ordering;

use ota_core::version::Version;

const VECTORS: &str = include_str!("../../../clients/esp-idf/host/tests/version_vectors.txt");

#[test]
fn the_server_orders_the_shared_vectors_as_written() {
    let mut checked = 0;
    for line in VECTORS.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        checked += 1;
        if let Some(text) = line.strip_prefix('!') {
            let text = text.strip_prefix(' ').unwrap_or(text);
            assert!(Version::parse(text).is_err(), "'{text}' is read as a version");
            continue;
        }
        let parts: Vec<&str> = line.split(' ').collect();
        let [a, op, b] = parts[..] else {
            panic!("not 'A op B': {line}");
        };
        let want = match op {
            "<" => Ordering::Less,
            "=" => Ordering::Equal,
            ">" => Ordering::Greater,
            _ => panic!("unknown operator in: {line}"),
        };
        let (a, b) = (Version::parse(a).unwrap(), Version::parse(b).unwrap());
        assert_eq!(a.cmp(&b), want, "{line}");
        assert_eq!(b.cmp(&a), want.reverse(), "{line}");
    }
    assert!(checked > 40);
}
