//! `-o user_quota=SIZE`: the total size of each user's sections, and the cap on it, so
//! that one user cannot fill a store that every user shares.
//!
//! Each section is counted against its owner at the size the daemon last saw (see
//! DESIGN.md, "Per-user quota", for when that is); the model keeps that number beside
//! the section and hands it in here, so the per-uid totals are always the sum of those
//! numbers. Without a limit every method is a no-op and nothing is counted.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

pub struct Quota {
    limit: Option<u64>,
    /// Bytes counted per owner uid. Lock order: innermost (taken under a section's state).
    usage: Mutex<HashMap<u32, u64>>,
}

impl Quota {
    pub fn new(limit: Option<u64>) -> Quota {
        Quota {
            limit,
            usage: Mutex::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.limit.is_some()
    }

    fn usage(&self) -> MutexGuard<'_, HashMap<u32, u64>> {
        self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves a section of `uid` from `*counted` bytes to `size`, unchecked: for sizes that
    /// are already there (found at load, seen after the fact, or freed).
    pub fn recount(&self, uid: u32, counted: &mut u64, size: u64) {
        if !self.enabled() || *counted == size {
            return;
        }
        let mut usage = self.usage();
        let total = usage.entry(uid).or_insert(0);
        *total = total.saturating_sub(*counted) + size;
        if *total == 0 {
            usage.remove(&uid);
        }
        *counted = size;
    }

    /// Counts a growth of a section of `uid` to `size` before it happens, or refuses it
    /// when the owner's total would pass the limit (and then changes nothing).
    pub fn charge(&self, uid: u32, counted: &mut u64, size: u64) -> Result<()> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        if size <= *counted {
            self.recount(uid, counted, size);
            return Ok(());
        }
        let mut usage = self.usage();
        let total = usage.entry(uid).or_insert(0);
        let after = total.saturating_sub(*counted).saturating_add(size);
        if after > limit {
            return Err(Error::QuotaExceeded);
        }
        *total = after;
        *counted = size;
        Ok(())
    }

    /// A section of `counted` bytes changed owner (chown): the bytes go with it, unchecked,
    /// as only root may chown.
    pub fn transfer(&self, from: u32, to: u32, counted: u64) {
        if !self.enabled() || from == to || counted == 0 {
            return;
        }
        let (mut gone, mut came) = (counted, 0);
        self.recount(from, &mut gone, 0);
        self.recount(to, &mut came, counted);
    }

    /// Bytes counted against `uid`.
    pub fn used(&self, uid: u32) -> u64 {
        self.usage().get(&uid).copied().unwrap_or(0)
    }
}

/// The unit storage is taken in: a tmpfs page.
pub const PAGE: u64 = 4096;

/// What a section of `size` bytes costs against its owner's quota: the pages it occupies,
/// and at least one even when empty, so that a user cannot make sections without bound.
pub fn footprint(size: u64) -> u64 {
    size.div_ceil(PAGE).max(1).saturating_mul(PAGE)
}

/// Parses a size for `user_quota=`: a whole number of bytes, or with a binary suffix
/// `k`, `m`, `g` or `t` (either case).
pub fn parse_size(text: &str) -> Option<u64> {
    let (digits, shift) = match text.char_indices().last()? {
        (i, 'k' | 'K') => (&text[..i], 10),
        (i, 'm' | 'M') => (&text[..i], 20),
        (i, 'g' | 'G') => (&text[..i], 30),
        (i, 't' | 'T') => (&text[..i], 40),
        _ => (text, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("16m"), Some(16 << 20));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("3k"), Some(3072));
        assert_eq!(parse_size("1t"), Some(1 << 40));
        for bad in [
            "",
            "m",
            "-1",
            "1.5m",
            "1mb",
            "0x10",
            " 1",
            "99999999999999999999",
        ] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
        assert_eq!(parse_size("17179869184g"), None, "overflow");
    }

    #[test]
    fn charges_stop_at_the_limit_and_change_nothing() {
        let q = Quota::new(Some(100));
        let (mut a, mut b) = (0, 0);
        q.charge(1, &mut a, 60).unwrap();
        q.charge(1, &mut b, 40).unwrap();
        assert_eq!(q.used(1), 100);
        assert!(matches!(q.charge(1, &mut b, 41), Err(Error::QuotaExceeded)));
        assert_eq!((q.used(1), b), (100, 40));
        // Another user has a quota of its own.
        let mut c = 0;
        q.charge(2, &mut c, 100).unwrap();
        // Freed bytes can be used again.
        q.recount(1, &mut a, 0);
        q.charge(1, &mut b, 100).unwrap();
        assert_eq!(q.used(1), 100);
        // Bytes that moved with a chown count for the new owner.
        q.transfer(2, 1, c);
        assert_eq!((q.used(1), q.used(2)), (200, 0));
        let mut d = 0;
        assert!(
            q.charge(1, &mut d, 1).is_err(),
            "over the limit after a chown"
        );
        q.charge(1, &mut d, 0).unwrap();
    }

    #[test]
    fn a_section_costs_its_pages_and_at_least_one() {
        assert_eq!(footprint(0), PAGE);
        assert_eq!(footprint(1), PAGE);
        assert_eq!(footprint(PAGE), PAGE);
        assert_eq!(footprint(PAGE + 1), 2 * PAGE);
        assert_eq!(footprint(u64::MAX), u64::MAX, "saturates");
    }

    #[test]
    fn without_a_limit_nothing_is_counted() {
        let q = Quota::new(None);
        let mut a = 0;
        q.charge(1, &mut a, u64::MAX).unwrap();
        assert_eq!(q.used(1), 0);
        assert_eq!(a, 0);
    }
}
