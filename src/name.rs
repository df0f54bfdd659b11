//! Section names: which names are valid, and the C-style escaping used wherever a name is
//! written as one line of text (the sidecar and the store's records).

use crate::error::{Error, Result};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// A section name is at most this long, so that `NAME.meta` fits in NAME_MAX (255).
pub const MAX_NAME_LEN: usize = 250;

/// The suffix reserved for sidecars.
pub const META_SUFFIX: &[u8] = b".meta";

/// Checks a name the caller wants to create (or rename to).
pub fn validate(name: &OsStr) -> Result<()> {
    let b = name.as_bytes();
    if b.len() > MAX_NAME_LEN {
        return Err(Error::NameTooLong);
    }
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(Error::InvalidName);
    }
    if b.contains(&b'\\') || b.ends_with(META_SUFFIX) {
        return Err(Error::InvalidName);
    }
    Ok(())
}

/// If `name` is a sidecar name (`X.meta`), the section name `X` it belongs to.
pub fn sidecar_of(name: &OsStr) -> Option<&OsStr> {
    let b = name.as_bytes();
    let stem = b.strip_suffix(META_SUFFIX)?;
    (!stem.is_empty()).then(|| OsStr::from_bytes(stem))
}

/// `NAME.meta` for a section name.
pub fn sidecar_name(name: &OsStr) -> OsString {
    let mut v = name.as_bytes().to_vec();
    v.extend_from_slice(META_SUFFIX);
    OsString::from_vec(v)
}

/// Escapes a name into one line of printable text: `\\` for a backslash, `\n` for a
/// newline, `\xNN` for each byte of other control characters (C0, DEL, C1), of the Unicode
/// line and paragraph separators, and of bytes that are not UTF-8. Other characters pass
/// as they are. (Python's `str.splitlines()` breaks lines at U+0085, U+2028 and U+2029 too.)
pub fn escape(name: &OsStr) -> String {
    let mut out = String::with_capacity(name.len());
    let hex = |out: &mut String, bytes: &[u8]| {
        for b in bytes {
            out.push_str(&format!("\\x{b:02x}"));
        }
    };
    for chunk in name.as_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                    hex(&mut out, c.encode_utf8(&mut [0u8; 4]).as_bytes())
                }
                c => out.push(c),
            }
        }
        hex(&mut out, chunk.invalid());
    }
    out
}

/// The inverse of [`escape`]. `None` for text that `escape` cannot have produced.
pub fn unescape(text: &str) -> Option<OsString> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1)? {
            b'\\' => {
                out.push(b'\\');
                i += 2;
            }
            b'n' => {
                out.push(b'\n');
                i += 2;
            }
            b'x' => {
                let hex = std::str::from_utf8(b.get(i + 2..i + 4)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 4;
            }
            _ => return None,
        }
    }
    Some(OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(b: &[u8]) -> &OsStr {
        OsStr::from_bytes(b)
    }

    #[test]
    fn valid_names() {
        for n in [
            &b"a"[..],
            b".hidden",
            b"with space",
            "ünï".as_bytes(),
            b"x.met",
            b"meta",
        ] {
            assert!(validate(os(n)).is_ok(), "{n:?}");
        }
        assert!(validate(os(&[b'n'; 250])).is_ok());
    }

    #[test]
    fn refused_names() {
        assert!(matches!(validate(os(b"a.meta")), Err(Error::InvalidName)));
        assert!(matches!(validate(os(b".meta")), Err(Error::InvalidName)));
        assert!(matches!(validate(os(b"a\\b")), Err(Error::InvalidName)));
        assert!(matches!(validate(os(b"")), Err(Error::InvalidName)));
        assert!(matches!(validate(os(b"..")), Err(Error::InvalidName)));
        assert!(matches!(validate(os(b"a/b")), Err(Error::InvalidName)));
        assert!(matches!(
            validate(os(&[b'n'; 251])),
            Err(Error::NameTooLong)
        ));
    }

    #[test]
    fn sidecar_names() {
        assert_eq!(sidecar_of(os(b"x.meta")), Some(os(b"x")));
        assert_eq!(sidecar_of(os(b".meta")), None);
        assert_eq!(sidecar_of(os(b"x")), None);
        assert_eq!(sidecar_name(os(b"x")), os(b"x.meta"));
    }

    #[test]
    fn escape_round_trips() {
        let cases: [&[u8]; 6] = [
            b"plain",
            b"a\\b\nc",
            b"\x01\x7f\xff\xfe",
            "ü".as_bytes(),
            "\u{85}\u{9f}\u{2029}x".as_bytes(),
            b"",
        ];
        for c in cases {
            let e = escape(os(c));
            assert!(!e.contains('\n'));
            assert_eq!(unescape(&e).as_deref(), Some(os(c)), "{e}");
        }
        assert_eq!(escape(os(b"a\\b\n\x01")), "a\\\\b\\n\\x01");
        // C1 controls and the Unicode line separators never reach the line either.
        assert_eq!(
            escape(os("a\u{85}b\u{2028}".as_bytes())),
            "a\\xc2\\x85b\\xe2\\x80\\xa8"
        );
        assert_eq!(escape(os("ü☃".as_bytes())), "ü☃");
    }

    #[test]
    fn unescape_refuses_garbage() {
        assert_eq!(unescape("a\\"), None);
        assert_eq!(unescape("\\q"), None);
        assert_eq!(unescape("\\x4"), None);
        assert_eq!(unescape("\\xzz"), None);
    }
}
