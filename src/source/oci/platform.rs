//! Platforms as the OCI image index names them (`os`, `architecture`, `variant`): the one
//! `--platform OS/ARCH[/VARIANT]` asks for (default: this machine's, as Go names it: linux/amd64
//! on x86-64), and whether an image's matches it.

use std::fmt;

/// An operating system and CPU architecture, with an optional variant (`arm64/v8`, `arm/v7`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl Platform {
    /// This machine's platform, in the names Go (and so the OCI spec) uses.
    pub fn host() -> Platform {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
            "loongarch64" => ("loong64", None),
            other => (other, None),
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            arch: arch.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// Parses `OS/ARCH` or `OS/ARCH/VARIANT`.
    pub fn parse(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        };
        match parts[..] {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => Err(format!(
                "'{s}' is not OS/ARCH or OS/ARCH/VARIANT (e.g. linux/amd64, linux/arm64/v8)"
            )),
        }
    }

    /// Whether an image made for `other` runs here: same OS and architecture, and the same
    /// variant when this one names one (arm64 without a variant is v8).
    pub fn matches(&self, other: &Platform) -> bool {
        let variant = |p: &Platform| match (&p.variant, p.arch.as_str()) {
            (Some(v), _) => Some(v.clone()),
            (None, "arm64") => Some("v8".to_string()),
            (None, _) => None,
        };
        self.os == other.os
            && self.arch == other.arch
            && (self.variant.is_none() || variant(self) == variant(other))
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_match() {
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert!(p.matches(&Platform::parse("linux/arm64").unwrap()));
        assert!(!p.matches(&Platform::parse("linux/arm64/v9").unwrap()));
        let any = Platform::parse("linux/arm").unwrap();
        assert!(any.matches(&Platform::parse("linux/arm/v6").unwrap()));
        assert!(!any.matches(&Platform::parse("linux/amd64").unwrap()));
        assert!(!any.matches(&Platform::parse("windows/arm").unwrap()));
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", "linux/am d64"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
        #[cfg(target_arch = "x86_64")]
        assert_eq!(Platform::host().to_string(), "linux/amd64");
    }
}
