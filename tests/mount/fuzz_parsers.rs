//! Fuzzing of the pure parts that take untrusted text: section names (from any program
//! on the mount), `-o` option strings (from the command line and fstab) and store records
//! (from a store directory that may be damaged). Each property runs proptest's default
//! number of cases (256; `PROPTEST_CASES` raises it) as part of `cargo test`.
//!
//! The properties state the contract (`../shared/spec/SECTIONS.md`), not the code: which
//! names are valid, that escaping round-trips and stays on one line, that a refused option
//! is named, and that no input makes a parser panic. No mount is needed here.

use proptest::prelude::*;
use sectionfs::contract::{Commit, Lifetime};
use sectionfs::daemon::Error;
use sectionfs::daemon::name;
use sectionfs::daemon::{FileBacking, Record};
use sectionfs::daemon::{MountOptions, Passthrough, Switch};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, UNIX_EPOCH};

/// Proptest's defaults (256 cases, `PROPTEST_CASES` honoured), without regression files
/// written into the source tree: a failure prints its minimal input instead.
fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// Bytes that are likely to matter to the name rules, mixed with any byte at all.
fn name_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => any::<u8>().prop_map(|b| vec![b]),
        2 => "[a-z]{1,8}".prop_map(String::into_bytes),
        1 => Just(b".meta".to_vec()),
        1 => Just(b"\\".to_vec()),
        1 => Just(b"/".to_vec()),
        1 => Just(b"\0".to_vec()),
        1 => Just(b".".to_vec()),
        1 => Just(b"\n".to_vec()),
        1 => Just("ü".as_bytes().to_vec()),
        1 => Just(vec![b'L'; 120]),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|v| v.concat())
}

/// A name the contract accepts: 1..=250 bytes, no `/`, NUL or backslash, not `.`/`..`,
/// not ending in `.meta`.
fn valid_name() -> impl Strategy<Value = Vec<u8>> {
    name_bytes().prop_filter_map("not a valid name", |mut b| {
        b.retain(|&c| c != b'/' && c != 0 && c != b'\\');
        b.truncate(name::MAX_NAME_LEN);
        while b.ends_with(name::META_SUFFIX) {
            b.pop();
        }
        (!b.is_empty() && b != b"." && b != b"..").then_some(b)
    })
}

/// The spec's name rule, written out independently of `name::validate`.
fn spec_verdict(b: &[u8]) -> Result<(), i32> {
    if b.len() > 250 {
        return Err(libc::ENAMETOOLONG);
    }
    let reserved = b.is_empty() || b == b"." || b == b"..";
    if reserved || b.contains(&b'/') || b.contains(&0) || b.contains(&b'\\') {
        return Err(libc::EINVAL);
    }
    if b.ends_with(b".meta") {
        return Err(libc::EINVAL);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]
    #[test]
    fn validate_is_the_spec_rule(b in name_bytes()) {
        let got = name::validate(os(&b)).map_err(|e| e.errno());
        prop_assert_eq!(got, spec_verdict(&b), "name {:?}", String::from_utf8_lossy(&b));
        if let Err(e) = name::validate(os(&b)) {
            prop_assert!(matches!(e, Error::NameTooLong | Error::InvalidName), "{:?}", e);
        }
    }

    #[test]
    fn escape_is_one_printable_line_and_round_trips(b in name_bytes()) {
        let text = name::escape(os(&b));
        prop_assert!(
            !text.chars().any(|c| c.is_control()),
            "control character in {:?}", text
        );
        let back = name::unescape(&text);
        prop_assert_eq!(back.as_deref(), Some(os(&b)), "escaped as {:?}", text);
    }

    #[test]
    fn unescape_of_any_text_never_panics(text in any::<String>(), tail in "(\\\\(x[0-9a-fA-F]{0,2}|n|\\\\|.)?)") {
        for t in [text.clone(), format!("{text}{tail}"), format!("{tail}{text}")] {
            if let Some(name) = name::unescape(&t) {
                // Whatever it accepts, escaping it again reads back the same bytes.
                let again = name::escape(&name);
                prop_assert_eq!(name::unescape(&again), Some(name));
            }
        }
    }

    #[test]
    fn sidecar_names_map_back(b in valid_name()) {
        let side = name::sidecar_name(os(&b));
        prop_assert_eq!(name::sidecar_of(&side), Some(os(&b)));
        // The sidecar of the longest valid name still fits NAME_MAX.
        prop_assert!(side.len() <= 255);
        prop_assert!(
            name::validate(&side).is_err(),
            "a sidecar name is never a valid section name"
        );
    }
}

/// Options the spec and `--help` name, with their accepted values.
const KNOWN: &[&str] = &[
    "allow_other",
    "ro",
    "rw",
    "commit=eager",
    "commit=lazy",
    "passthrough=auto",
    "passthrough=on",
    "passthrough=off",
    "io_uring=auto",
    "io_uring=on",
    "io_uring=off",
    "nodev",
    "nosuid",
    "noatime",
    "defaults",
    "default_permissions",
    "x-systemd.automount",
    "comment=anything",
];

fn option_item() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KNOWN).prop_map(str::to_string),
        1 => Just(String::new()),
        1 => "[a-z_=.-]{1,12}",
        1 => any::<String>().prop_map(|s| s.replace(',', "")),
        1 => prop::sample::select(&["commit", "passthrough", "allow_other=1", "commit=",
            "passthrough=yes", "io_uring", "io_uring=yes", "ro=1", "=", "x-", "commitx=lazy"][..]).prop_map(str::to_string),
    ]
}

/// Whether one `-o` item stands on its own as accepted: the reference for `apply`.
fn accepted(item: &str) -> bool {
    const PLAIN: &[&str] = &[
        "allow_other",
        "ro",
        "rw",
        "dev",
        "nodev",
        "suid",
        "nosuid",
        "exec",
        "noexec",
        "auto",
        "noauto",
        "nofail",
        "user",
        "nouser",
        "users",
        "defaults",
        "_netdev",
        "atime",
        "noatime",
        "relatime",
        "strictatime",
        "nodiratime",
        "async",
        "default_permissions",
    ];
    let (key, value) = match item.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (item, None),
    };
    match (key, value) {
        ("commit", Some(v)) => v == "eager" || v == "lazy",
        ("passthrough" | "io_uring", Some(v)) => ["auto", "on", "off"].contains(&v),
        (k, _) if k.starts_with("x-") || k == "comment" => true,
        (k, None) => PLAIN.contains(&k),
        _ => false,
    }
}

proptest! {
    #![proptest_config(config())]
    #[test]
    fn mount_options_accept_exactly_the_known_ones(
        items in prop::collection::vec(option_item(), 0..6)
    ) {
        let list = items.join(",");
        let mut opts = MountOptions::default();
        let result = opts.apply(&list);
        let first_bad = items.iter().find(|i| !i.is_empty() && !accepted(i));
        match (result, first_bad) {
            (Ok(()), None) => {
                // The last word on each option wins, as with mount(8).
                let last = |pred: &dyn Fn(&str) -> bool| {
                    items.iter().rev().find(|i| pred(i)).cloned()
                };
                let want_commit = match last(&|i| i.starts_with("commit=")).as_deref() {
                    Some("commit=lazy") => Commit::Lazy,
                    _ => Commit::Eager,
                };
                prop_assert_eq!(opts.commit, want_commit);
                let want_pt = match last(&|i| i.starts_with("passthrough=")).as_deref() {
                    Some("passthrough=on") => Passthrough::On,
                    Some("passthrough=off") => Passthrough::Off,
                    _ => Passthrough::Auto,
                };
                prop_assert_eq!(opts.passthrough, want_pt);
                let want_ring = match last(&|i| i.starts_with("io_uring=")).as_deref() {
                    Some("io_uring=on") => Switch::On,
                    Some("io_uring=off") => Switch::Off,
                    _ => Switch::Auto,
                };
                prop_assert_eq!(opts.io_uring, want_ring);
                let want_ro = last(&|i| i == "ro" || i == "rw").as_deref() == Some("ro");
                prop_assert_eq!(opts.read_only, want_ro);
                prop_assert_eq!(opts.allow_other, items.iter().any(|i| i == "allow_other"));
            }
            (Err(msg), Some(bad)) => {
                prop_assert!(msg.contains(bad.as_str()), "{:?} does not name {:?}", msg, bad);
            }
            (result, bad) => {
                prop_assert!(false, "-o {:?}: got {:?}, first refused item {:?}", list, result, bad);
            }
        }
    }

    #[test]
    fn mount_options_never_panic_on_any_text(text in any::<String>()) {
        let mut opts = MountOptions::default();
        if let Err(msg) = opts.apply(&text) {
            prop_assert!(!msg.is_empty());
        }
    }
}

fn record() -> impl Strategy<Value = Record> {
    (
        valid_name(),
        any::<u32>(),
        any::<u32>(),
        0u32..=0o7777,
        any::<u32>(),
        // Seconds a SystemTime can hold, well past any real clock.
        (0u64..1 << 40, 0u32..1_000_000_000),
        prop::bool::ANY,
        any::<u64>(),
    )
        .prop_map(|(name, uid, gid, mode, pid, (s, n), lazy, seq)| Record {
            name: OsStr::from_bytes(&name).to_os_string(),
            uid,
            gid,
            mode,
            creator_pid: pid,
            created_at: UNIX_EPOCH + Duration::new(s, n),
            commit: if lazy { Commit::Lazy } else { Commit::Eager },
            seq,
            lifetime: if seq % 2 == 0 {
                Lifetime::Handles
            } else {
                Lifetime::Persistent
            },
            backing: (seq % 3 == 0).then(|| FileBacking {
                path: "/var/lib/data".into(),
                writable: seq % 2 == 0,
            }),
            namespace: (seq % 5 == 0).then_some(uid),
        })
}

/// One change a damaged store could make to a record's bytes.
#[derive(Clone, Debug)]
enum Damage {
    Flip(usize, u8),
    Cut(usize),
    Insert(usize, Vec<u8>),
    DropLine(usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Damage::Flip(i, b)),
        any::<usize>().prop_map(Damage::Cut),
        (
            any::<usize>(),
            prop_oneof![
                prop::collection::vec(any::<u8>(), 1..8),
                Just(b"\nname=a.meta\n".to_vec()),
                Just(b"\nmode=99999999999\n".to_vec()),
                Just(b"\nseq=-1\n".to_vec()),
                Just(b"\ncreated_at=1.1000000000\n".to_vec()),
                Just(b"\ncreated_at=99999999999999999999.0\n".to_vec()),
                Just(b"\nname=\\x\n".to_vec()),
                Just(b"=\n".to_vec()),
            ]
        )
            .prop_map(|(i, b)| Damage::Insert(i, b)),
        any::<usize>().prop_map(Damage::DropLine),
    ]
}

fn apply_damage(bytes: &mut Vec<u8>, d: &Damage) {
    let n = bytes.len();
    match d {
        Damage::Flip(i, b) if n > 0 => bytes[i % n] ^= b | 1,
        Damage::Cut(i) => bytes.truncate(i % (n + 1)),
        Damage::Insert(i, ins) => {
            let at = i % (n + 1);
            bytes.splice(at..at, ins.iter().copied());
        }
        Damage::DropLine(i) => {
            let mut lines: Vec<&[u8]> = bytes.split(|&c| c == b'\n').collect();
            let k = i % lines.len();
            lines.remove(k);
            *bytes = lines.join(&b'\n');
        }
        Damage::Flip(..) => {}
    }
}

/// What `decode` promises about anything it accepts.
fn check_decoded(r: &Record) -> Result<(), TestCaseError> {
    prop_assert!(
        name::validate(&r.name).is_ok(),
        "decoded a bad name {:?}",
        r.name
    );
    prop_assert!(r.mode <= 0o7777);
    // Whatever was accepted encodes to a record that decodes to itself.
    let again = Record::decode(r.encode().as_bytes());
    prop_assert_eq!(again.as_ref(), Ok(r));
    Ok(())
}

proptest! {
    #![proptest_config(config())]
    #[test]
    fn records_round_trip(r in record()) {
        prop_assert_eq!(Record::decode(r.encode().as_bytes()), Ok(r));
    }

    #[test]
    fn decode_of_any_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(r) = Record::decode(&bytes) {
            check_decoded(&r)?;
        }
        let mut with_header = b"sectionfs-record 1\n".to_vec();
        with_header.extend_from_slice(&bytes);
        if let Ok(r) = Record::decode(&with_header) {
            check_decoded(&r)?;
        }
    }

    #[test]
    fn decode_of_damaged_records_never_panics(
        r in record(),
        damages in prop::collection::vec(damage(), 1..4)
    ) {
        let mut bytes = r.encode().into_bytes();
        for d in &damages {
            apply_damage(&mut bytes, d);
        }
        match Record::decode(&bytes) {
            Ok(decoded) => check_decoded(&decoded)?,
            Err(why) => prop_assert!(!why.is_empty()),
        }
    }
}
