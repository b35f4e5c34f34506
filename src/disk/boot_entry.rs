//! The text files of the EFI system partition: systemd-boot's `loader/loader.conf` and a Boot
//! Loader Specification Type #1 entry, and the names under which the kernel and initrd are
//! stored (`/ENTRY-TOKEN/VERSION/linux` and `initrd`, as `kernel-install` lays them out). Every
//! value that comes from the tree is made safe for one line of a config file and for a FAT name.

use uuid::Uuid;

/// What the entry says.
#[derive(Debug, Clone)]
pub struct EntrySpec<'a> {
    /// os-release's ID (the entry token when it is a valid one).
    pub os_id: Option<&'a str>,
    /// os-release's PRETTY_NAME (the title).
    pub pretty_name: Option<&'a str>,
    /// The kernel's version, as found.
    pub version: &'a str,
    /// The root filesystem's partition.
    pub root: Uuid,
    /// Added to the command line.
    pub cmdline: Option<&'a str>,
}

/// The entry's names and texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEntry {
    /// The directory name under the ESP's root (os-release's ID, or `linux`).
    pub token: String,
    /// The version as a FAT directory name.
    pub version_dir: String,
    /// `TOKEN-VERSION.conf`, in `loader/entries/`.
    pub file_name: String,
    pub entry: String,
    pub loader_conf: String,
    /// The kernel's command line.
    pub options: String,
}

impl BootEntry {
    pub fn new(spec: &EntrySpec) -> BootEntry {
        let token = spec
            .os_id
            .filter(|id| {
                !id.is_empty()
                    && id.len() <= 64
                    && id
                        .bytes()
                        .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
                    && !matches!(*id, "efi" | "loader" | "." | "..")
                    && !id.ends_with('.')
            })
            .unwrap_or("linux")
            .to_string();
        let version_dir: String = spec
            .version
            .chars()
            .take(64)
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._+~-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let version_dir = match version_dir.trim_end_matches('.') {
            "" => "linux".to_string(),
            v => v.to_string(),
        };
        let title = spec.pretty_name.map(one_line).filter(|t| !t.is_empty());
        let title = title.unwrap_or_else(|| format!("Linux {}", one_line(spec.version)));
        let mut options = format!("root=PARTUUID={} rw", spec.root.hyphenated());
        if let Some(extra) = spec.cmdline.map(one_line).filter(|c| !c.is_empty()) {
            options.push(' ');
            options.push_str(&extra);
        }
        let file_name = format!("{token}-{version_dir}.conf");
        let entry = format!(
            "title {title}\nversion {}\nlinux /{token}/{version_dir}/linux\ninitrd \
             /{token}/{version_dir}/initrd\noptions {options}\n",
            one_line(spec.version)
        );
        let loader_conf = format!("timeout 0\ndefault {file_name}\n");
        BootEntry {
            token,
            version_dir,
            file_name,
            entry,
            loader_conf,
            options,
        }
    }
}

/// `s` on one line: control characters dropped, spaces trimmed, at most 200 characters.
fn one_line(s: &str) -> String {
    let kept: String = s.chars().filter(|c| !c.is_control()).take(200).collect();
    kept.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_entry() {
        let root = Uuid::from_u128(0x1234);
        let e = BootEntry::new(&EntrySpec {
            os_id: Some("debian"),
            pretty_name: Some("Debian GNU/Linux 12 (bookworm)"),
            version: "6.1.0-50-amd64",
            root,
            cmdline: Some("console=ttyS0"),
        });
        assert_eq!(e.file_name, "debian-6.1.0-50-amd64.conf");
        assert_eq!(
            e.entry,
            "title Debian GNU/Linux 12 (bookworm)\nversion 6.1.0-50-amd64\n\
             linux /debian/6.1.0-50-amd64/linux\ninitrd /debian/6.1.0-50-amd64/initrd\n\
             options root=PARTUUID=00000000-0000-0000-0000-000000001234 rw console=ttyS0\n"
        );
        assert_eq!(
            e.loader_conf,
            "timeout 0\ndefault debian-6.1.0-50-amd64.conf\n"
        );
    }

    #[test]
    fn hostile_values_stay_on_one_line_and_make_safe_names() {
        let e = BootEntry::new(&EntrySpec {
            os_id: Some("../EFI"),
            pretty_name: Some("evil\noptions init=/bin/sh"),
            version: "1.0/../x\n",
            root: Uuid::nil(),
            cmdline: None,
        });
        assert_eq!(e.token, "linux");
        assert_eq!(e.version_dir, "1.0_.._x_");
        assert_eq!(e.entry.lines().count(), 5);
        assert!(e.entry.starts_with("title eviloptions init=/bin/sh\n"));
        let none = BootEntry::new(&EntrySpec {
            os_id: None,
            pretty_name: None,
            version: "...",
            root: Uuid::nil(),
            cmdline: None,
        });
        assert_eq!(
            (none.token.as_str(), none.version_dir.as_str()),
            ("linux", "linux")
        );
    }
}
