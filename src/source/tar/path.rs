//! Archive paths to components below the root, as tar extraction resolves them: `./` prefixes,
//! `.` components, repeated and trailing `/` dropped; absolute paths and `..` refused (an entry
//! must never land outside the tree), as are names ext2/3/4 cannot hold.

use anyhow::{bail, Result};

/// Deepest path accepted (the tree is walked recursively when the filesystem is made).
pub const MAX_DEPTH: usize = 8192;
/// Longest name ext2/3/4 directories hold.
const MAX_NAME: usize = 255;

/// The components of `path` below the archive root (none for the root itself).
pub fn components(path: &[u8]) -> Result<Vec<&[u8]>> {
    if path.starts_with(b"/") {
        bail!("absolute path (it leaves the archive root)");
    }
    if path.contains(&0) {
        bail!("path contains a NUL byte");
    }
    let mut out = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => bail!("path leaves the archive root ('..')"),
            c if c.len() > MAX_NAME => {
                bail!(
                    "a name of {} bytes is longer than the {MAX_NAME} ext2/3/4 allow",
                    c.len()
                )
            }
            c => out.push(c),
        }
    }
    if out.len() > MAX_DEPTH {
        bail!("path more than {MAX_DEPTH} levels deep");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(p: &str) -> Vec<String> {
        components(p.as_bytes())
            .unwrap()
            .iter()
            .map(|c| String::from_utf8(c.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn normalised_like_tar_extraction() {
        assert_eq!(ok("./a/b"), ["a", "b"]);
        assert_eq!(ok("a//b///c/"), ["a", "b", "c"]);
        assert_eq!(ok("././a/./b/."), ["a", "b"]);
        assert!(ok(".").is_empty());
        assert!(ok("./").is_empty());
        assert!(ok("").is_empty());
        assert_eq!(ok("...").len(), 1);
        assert_eq!(ok("a/..b/c.."), ["a", "..b", "c.."]);
    }

    #[test]
    fn hostile_paths_are_refused() {
        for p in [
            "../etc/passwd",
            "a/../../b",
            "a/..",
            "/etc/passwd",
            "//x",
            "./../x",
        ] {
            let e = components(p.as_bytes()).unwrap_err().to_string();
            assert!(e.contains("leaves the archive root"), "{p}: {e}");
        }
        assert!(components(b"a\0b").is_err());
        assert!(components(&[b'n'; 256]).is_err());
        assert!(components(&[b'n'; 255]).is_ok());
        assert!(components("a/".repeat(MAX_DEPTH + 1).as_bytes()).is_err());
    }
}
