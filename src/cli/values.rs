//! Parsers for option values that need more than clap's built-in ones: sizes with K/M/G/T/P
//! suffixes, `UID:GID`, percentages, power-of-two byte counts, labels and partition names.
//!
//! Standalone on purpose (std only): `build.rs` compiles this file together with `args.rs` to
//! generate the man page and shell completions from the same definitions.

/// `--size`: `SIZE` (the filesystem's total size) or `+SIZE` (free space wanted after the files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeArg {
    /// Exactly this many bytes (rounded down to whole blocks).
    Total(u64),
    /// At least this many bytes free once the files are in.
    Free(u64),
}

/// Parses `SIZE` or `+SIZE` (see [`parse_bytes`]).
pub fn parse_size(s: &str) -> Result<SizeArg, String> {
    match s.strip_prefix('+') {
        Some(rest) => parse_bytes(rest).map(SizeArg::Free),
        None => parse_bytes(s).map(SizeArg::Total),
    }
}

/// Parses `123`, `64K`, `512M`, `3G`, `1T`, `1P` (case-insensitive, optional `iB`/`B`):
/// suffixes are powers of 1024, a bare number is bytes.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let bad = || {
        format!("invalid size '{s}': expected a number with an optional K, M, G, T or P suffix (powers of 1024)")
    };
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits_end == 0 {
        return Err(bad());
    }
    let n: u64 = t[..digits_end].parse().map_err(|_| bad())?;
    let suffix = t[digits_end..].to_ascii_uppercase();
    let shift = match suffix.as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        "P" | "PB" | "PIB" => 50,
        _ => return Err(bad()),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size '{s}' is too large"))
}

/// `--owner UID:GID`, numeric: 0 to 4294967294 (4294967295 is (uid_t)-1, which Linux
/// reserves to mean no id).
pub fn parse_owner(s: &str) -> Result<(u32, u32), String> {
    let (u, g) = s
        .split_once(':')
        .ok_or_else(|| format!("'{s}' is not UID:GID"))?;
    let num = |x: &str| match x.parse::<u32>() {
        Ok(u32::MAX) => Err(format!(
            "'{x}' is (uid_t)-1, which Linux reserves to mean no id"
        )),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("'{x}' is not a numeric id from 0 to 4294967294")),
    };
    Ok((num(u)?, num(g)?))
}

/// `-m`: a percentage from 0 to 50, as mke2fs takes it.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=50.0).contains(&p) => Ok(p),
        _ => Err(format!("'{s}' is not a percentage from 0 to 50")),
    }
}

/// `-I`: a power of two from 128 to 4096.
pub fn parse_inode_size(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(n) if n >= 128 && n.is_power_of_two() && n <= 4096 => Ok(n),
        _ => Err(format!("'{s}' is not a power of two from 128 to 4096")),
    }
}

/// `--part-label`: at most 36 UTF-16 code units, what a GPT entry holds.
pub fn parse_part_label(s: &str) -> Result<String, String> {
    let units = s.encode_utf16().count();
    if units > 36 {
        return Err(format!(
            "'{s}' is {units} UTF-16 code units; a GPT partition name holds 36"
        ));
    }
    Ok(s.to_string())
}

/// `--add SRC[:DEST]`: SRC is everything before the last `:/`, DEST (an absolute path in the
/// image) from that `/` on; without a `:/`, all of it is SRC and DEST is None (`/`). So a SRC
/// may hold `:` (and `:/`, given a DEST: `a:/b:/`), a DEST may hold `:` but not `:/`.
pub fn split_add(s: &std::ffi::OsStr) -> (std::ffi::OsString, Option<Vec<u8>>) {
    use std::os::unix::ffi::OsStrExt;
    let b = s.as_bytes();
    match b.windows(2).rposition(|w| w == b":/") {
        Some(i) => (
            std::ffi::OsStr::from_bytes(&b[..i]).to_owned(),
            Some(b[i + 1..].to_vec()),
        ),
        None => (s.to_owned(), None),
    }
}

/// `-L`: at most 16 bytes, what an ext2/3/4 superblock holds.
pub fn parse_label(s: &str) -> Result<String, String> {
    if s.len() > 16 {
        return Err(format!(
            "'{s}' is {} bytes; an ext2/3/4 label holds at most 16",
            s.len()
        ));
    }
    Ok(s.to_string())
}

/// `--block-size`: 1024, 2048 or 4096 (also written 1K, 2K, 4K).
pub fn parse_block_size(s: &str) -> Result<u32, String> {
    match s {
        "1024" | "1K" | "1k" => Ok(1024),
        "2048" | "2K" | "2k" => Ok(2048),
        "4096" | "4K" | "4k" => Ok(4096),
        _ => Err(format!("'{s}' is not one of 1024, 2048, 4096")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_are_powers_of_1024() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("64K"), Ok(64 << 10));
        assert_eq!(parse_bytes("64k"), Ok(64 << 10));
        assert_eq!(parse_bytes("512M"), Ok(512 << 20));
        assert_eq!(parse_bytes("3G"), Ok(3 << 30));
        assert_eq!(parse_bytes("2T"), Ok(2 << 40));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
    }

    #[test]
    fn plus_means_free_space() {
        assert_eq!(parse_size("+1G"), Ok(SizeArg::Free(1 << 30)));
        assert_eq!(parse_size("100M"), Ok(SizeArg::Total(100 << 20)));
    }

    #[test]
    fn garbage_is_rejected() {
        for s in [
            "",
            "+",
            "M",
            "12Q",
            "1.5G",
            "-5M",
            "99999999999999999999",
            "16777216T",
        ] {
            assert!(parse_size(s).is_err(), "{s:?} accepted");
        }
    }

    #[test]
    fn owners_are_32_bit_ids_but_not_minus_one() {
        assert_eq!(parse_owner("0:0"), Ok((0, 0)));
        assert_eq!(parse_owner("4294967294:1"), Ok((4294967294, 1)));
        assert!(parse_owner("4294967295:0")
            .unwrap_err()
            .contains("(uid_t)-1"));
        assert!(parse_owner("0:4294967296").is_err());
        assert!(parse_owner("-1:0").is_err());
    }

    #[test]
    fn labels_longer_than_16_bytes_are_refused() {
        assert!(parse_label("0123456789abcdef").is_ok());
        assert!(parse_label("0123456789abcdefg").is_err());
        assert!(parse_label("ééééééééé").is_err()); // 18 bytes
    }
}
