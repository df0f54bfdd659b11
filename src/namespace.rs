//! The Windows `Global\` and `Local\` namespaces as paths (see DESIGN.md, "Namespaces"):
//!
//! ```text
//! /mnt/sections/            the global namespace
//!   Global -> .             a symlink: Global/Name is Name
//!   Local -> Sessions/UID   a symlink whose target depends on who reads it
//!   Sessions/               0711, one directory per user
//!     1000/                 uid 1000's own namespace: 0700, owned by 1000, made on first use
//! ```
//! The three names are reserved at the root, and not listed there (`ls` of the root shows
//! sections only, as before). Names inside a user's directory follow the root's rules.

use std::borrow::Cow;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// Which namespace a name is in: `None` the global one (the root), `Some(uid)` that
/// user's own (`Sessions/UID`, reached as `Local`).
pub type Ns = Option<u32>;

pub const GLOBAL: &str = "Global";
pub const LOCAL: &str = "Local";
pub const SESSIONS: &str = "Sessions";

/// The root's reserved names.
pub fn is_reserved(ns: Ns, name: &OsStr) -> bool {
    ns.is_none() && [GLOBAL, LOCAL, SESSIONS].iter().any(|r| name == *r)
}

/// Where `Local` leads the user `uid`.
pub fn local_target(uid: u32) -> Vec<u8> {
    format!("{SESSIONS}/{uid}").into_bytes()
}

/// A user directory's name in `Sessions`: the uid in decimal, as `Local` writes it.
pub fn parse_uid(name: &OsStr) -> Option<u32> {
    let s = name.to_str()?;
    let uid: u32 = s.parse().ok()?;
    (uid.to_string() == s).then_some(uid)
}

/// The key of a name in the model's one name map: the name itself in the global
/// namespace, `UID/NAME` in a user's (a name never holds a `/`, so keys never collide).
pub fn key(ns: Ns, name: &OsStr) -> Cow<'_, OsStr> {
    match ns {
        None => Cow::Borrowed(name),
        Some(uid) => {
            let mut k = format!("{uid}/").into_bytes();
            k.extend_from_slice(name.as_bytes());
            Cow::Owned(OsString::from_vec(k))
        }
    }
}

/// Whether a key belongs to namespace `ns`.
pub fn key_in(ns: Ns, key: &OsStr) -> bool {
    let slash = key.as_bytes().iter().position(|&b| b == b'/');
    match (ns, slash) {
        (None, None) => true,
        (Some(uid), Some(i)) => key.as_bytes()[..i] == *uid.to_string().as_bytes(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_numbers() {
        assert_eq!(key(None, OsStr::new("a")), OsStr::new("a"));
        assert_eq!(key(Some(1000), OsStr::new("a")), OsStr::new("1000/a"));
        assert!(key_in(Some(1000), &key(Some(1000), OsStr::new("x"))));
        assert!(!key_in(Some(100), &key(Some(1000), OsStr::new("x"))));
        assert!(!key_in(None, &key(Some(1000), OsStr::new("x"))));
        assert_eq!(parse_uid(OsStr::new("1000")), Some(1000));
        assert_eq!(parse_uid(OsStr::new("01000")), None);
        assert_eq!(parse_uid(OsStr::new("x")), None);
        assert!(is_reserved(None, OsStr::new("Local")));
        assert!(!is_reserved(Some(1), OsStr::new("Local")));
    }
}
