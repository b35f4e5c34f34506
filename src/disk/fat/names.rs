//! FAT names: the short 8.3 name of every entry (with a numeric tail ~N when the name is not
//! one already), the long-name (VFAT) entries that carry the name as given, and which names a
//! FAT directory can hold at all (Microsoft's FAT specification, fatgen103).

use std::collections::HashSet;

use anyhow::{bail, Result};

use super::ATTR_LONG_NAME;

/// Characters never allowed in a long name (besides control characters).
const LONG_FORBIDDEN: &str = "\"*/:<>?\\|";
/// Characters allowed in a short name besides A-Z and 0-9.
const SHORT_SPECIALS: &str = "!#$%&'()-@^_`{}~";
/// The long-name entries for `name`, in directory order (the last part first).
pub(super) fn long_entries(name: &str, short: &[u8; 11]) -> Vec<[u8; 32]> {
    let units: Vec<u16> = name.encode_utf16().collect();
    let parts = units.len().div_ceil(13);
    let sum = short
        .iter()
        .fold(0u8, |s, &b| s.rotate_right(1).wrapping_add(b));
    (1..=parts)
        .rev()
        .map(|seq| {
            let mut e = [0u8; 32];
            e[0] = seq as u8 | if seq == parts { 0x40 } else { 0 };
            e[11] = ATTR_LONG_NAME;
            e[13] = sum;
            let unit = |k: usize| {
                let at = (seq - 1) * 13 + k;
                match at.cmp(&units.len()) {
                    std::cmp::Ordering::Less => units[at],
                    std::cmp::Ordering::Equal => 0,
                    std::cmp::Ordering::Greater => 0xFFFF,
                }
            };
            let slots = (1..11)
                .step_by(2)
                .chain((14..26).step_by(2))
                .chain((28..32).step_by(2));
            for (k, at) in slots.enumerate() {
                e[at..at + 2].copy_from_slice(&unit(k).to_le_bytes());
            }
            e
        })
        .collect()
}

/// A name FAT can hold: 1 to 255 UTF-16 units, none of `"*/:<>?\|` or control characters, not
/// `.` or `..`, not ending in a dot or space (which Windows and others strip).
pub(super) fn check_long_name(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.encode_utf16().count() > 255
        || name == "."
        || name == ".."
        || name.ends_with(['.', ' '])
        || name
            .chars()
            .any(|c| c.is_control() || LONG_FORBIDDEN.contains(c));
    if bad {
        bail!(
            "'{}' is not a name a FAT directory can hold",
            name.escape_default()
        );
    }
    Ok(())
}

/// The short name of `name` (unique in `taken`, which it joins) and whether long-name entries
/// are needed: not when the name is already upper-case 8.3.
pub(super) fn short_name(name: &str, taken: &mut HashSet<[u8; 11]>) -> ([u8; 11], bool) {
    if let Some(s) = exact_short(name) {
        if taken.insert(s) {
            return (s, false);
        }
    }
    if let Some(s) = exact_short(&name.to_ascii_uppercase()) {
        if taken.insert(s) {
            return (s, true);
        }
    }
    // The basis name: upper case, invalid characters as '_', dots and spaces dropped, the
    // extension from after the last dot; then the first free numeric tail ~1, ~2, ...
    let (base, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i + 1..]),
        _ => (name, ""),
    };
    let map = |s: &str| -> Vec<u8> {
        s.chars()
            .filter(|&c| c != '.' && c != ' ')
            .map(|c| {
                let c = c.to_ascii_uppercase();
                if short_char(c) {
                    c as u8
                } else {
                    b'_'
                }
            })
            .collect()
    };
    let (base, ext) = (map(base), map(ext));
    let base = if base.is_empty() { vec![b'_'] } else { base };
    let mut s = [b' '; 11];
    for (i, &c) in ext.iter().take(3).enumerate() {
        s[8 + i] = c;
    }
    for n in 1u32.. {
        let tail = format!("~{n}");
        let keep = base.len().min(8 - tail.len());
        s[..8].fill(b' ');
        s[..keep].copy_from_slice(&base[..keep]);
        s[keep..keep + tail.len()].copy_from_slice(tail.as_bytes());
        if taken.insert(s) {
            break;
        }
    }
    (s, true)
}

fn short_char(c: char) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit() || SHORT_SPECIALS.contains(c)
}

/// `name` as an 11-byte short name if it is one as it stands: 1-8 valid characters, optionally
/// a dot and 1-3 more.
pub(super) fn exact_short(name: &str) -> Option<[u8; 11]> {
    let (base, ext) = name.split_once('.').unwrap_or((name, ""));
    let ok = |s: &str, max: usize| s.len() <= max && s.chars().all(short_char);
    if base.is_empty() || !ok(base, 8) || !ok(ext, 3) || (name.contains('.') && ext.is_empty()) {
        return None;
    }
    let mut s = [b' '; 11];
    s[..base.len()].copy_from_slice(base.as_bytes());
    s[8..8 + ext.len()].copy_from_slice(ext.as_bytes());
    Some(s)
}
