//! What was made, said once at the end: the summary on standard error (sizes in one style,
//! binary units with one decimal; the identifiers a user needs next: filesystem UUID, label,
//! PARTUUID; the space available to ordinary users) and, with `--json`, one JSON object on
//! standard output with the same facts in bytes. For a written image, a dry run, and a served
//! disk once the server listens.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use serde_json::{json, Value};

use crate::mkfs::Report;
use crate::progress::{self, ByteSize};

/// Where the disk went.
#[derive(Debug, Clone)]
pub enum Destination {
    /// Written to this file.
    File(PathBuf),
    /// Not written (`--dry-run`); OUTPUT would be this file.
    DryRun(PathBuf),
    /// Served at this URI.
    Served(String),
}

/// The GPT around the filesystem (None with `--partition none`).
#[derive(Debug, Clone)]
pub struct Gpt {
    /// None when it would be random (a dry run without SOURCE_DATE_EPOCH or --disk-guid).
    pub disk_guid: Option<uuid::Uuid>,
    /// None when it would be random, as `disk_guid`.
    pub partition_guid: Option<uuid::Uuid>,
    pub partition_type: uuid::Uuid,
    pub partition_name: String,
}

/// Everything the summary and `--json` say.
#[derive(Debug, Clone)]
pub struct Facts {
    pub destination: Destination,
    pub disk_size: u64,
    pub partition_offset: u64,
    pub partition_size: u64,
    pub gpt: Option<Gpt>,
    /// With --efi: the EFI system partition's offset and size (it is partition 1, the
    /// filesystem partition 2).
    pub esp: Option<(u64, u64)>,
    /// "ext2", "ext3" or "ext4".
    pub fs_type: &'static str,
    pub fs: Report,
    /// None when it would be random (a dry run without SOURCE_DATE_EPOCH or --uuid).
    pub uuid: Option<uuid::Uuid>,
    /// Entries of SOURCE and the bytes of file data they hold.
    pub entries: u64,
    pub file_bytes: u64,
    pub elapsed_seconds: f64,
}

impl Facts {
    fn fs_size(&self) -> u64 {
        self.fs.blocks * self.fs.block_size as u64
    }

    /// The filesystem's partition number.
    fn partition_number(&self) -> u32 {
        if self.esp.is_some() {
            2
        } else {
            1
        }
    }

    fn free_bytes(&self) -> u64 {
        self.fs.free_blocks * self.fs.block_size as u64
    }

    /// The label as text (up to its first NUL).
    fn label(&self) -> String {
        let end = self.fs.label.iter().position(|&b| b == 0).unwrap_or(16);
        String::from_utf8_lossy(&self.fs.label[..end]).into_owned()
    }

    /// The `--json` object.
    pub fn json(&self) -> Value {
        let id = |u: Option<uuid::Uuid>| u.map(|u| u.to_string());
        let mut v = json!({
            "disk_size": self.disk_size,
            "partition_table": if self.gpt.is_some() { "gpt" } else { "none" },
            "partition_number": self.gpt.as_ref().map(|_| self.partition_number()),
            "partition_offset": self.partition_offset,
            "partition_size": self.partition_size,
            "partition_guid": self.gpt.as_ref().and_then(|g| id(g.partition_guid)),
            "partition_type": self.gpt.as_ref().map(|g| g.partition_type.to_string()),
            "partition_name": self.gpt.as_ref().map(|g| g.partition_name.clone()),
            "disk_guid": self.gpt.as_ref().and_then(|g| id(g.disk_guid)),
            "fs_type": self.fs_type,
            "fs_size": self.fs_size(),
            "block_size": self.fs.block_size,
            "blocks": self.fs.blocks,
            "inodes": self.fs.inodes,
            "free_inodes": self.fs.free_inodes,
            "entries": self.entries,
            "file_bytes": self.file_bytes,
            "free_bytes": self.free_bytes(),
            "available_bytes": self.fs.available_bytes(),
            "uuid": id(self.uuid),
            "label": self.label(),
            "elapsed_seconds": (self.elapsed_seconds * 1000.0).round() / 1000.0,
        });
        if let Some((offset, size)) = self.esp {
            v["esp_offset"] = json!(offset);
            v["esp_size"] = json!(size);
        }
        match &self.destination {
            Destination::File(p) => v["output"] = json!(p.to_string_lossy()),
            Destination::Served(uri) => v["uri"] = json!(uri),
            Destination::DryRun(_) => {}
        }
        v
    }

    /// The summary: a headline and three indented lines.
    pub fn summary(&self) -> Vec<String> {
        let what = match &self.gpt {
            Some(_) => "GPT disk",
            None => "bare filesystem (no partition table)",
        };
        let size = ByteSize(self.disk_size);
        let secs = self.elapsed_seconds;
        let head = match &self.destination {
            Destination::File(p) => {
                format!("wrote {} in {secs:.1} s: a {size} {what}", p.display())
            }
            Destination::DryRun(p) => {
                format!(
                    "would write {}: a {size} {what} (dry run, nothing written)",
                    p.display()
                )
            }
            Destination::Served(_) => format!("built in {secs:.1} s: a {size} {what}"),
        };
        let random = "random";
        let shown = |u: Option<uuid::Uuid>| u.map_or(random.to_string(), |u| u.to_string());
        let mut lines = vec![head];
        if let Some((offset, size)) = self.esp {
            lines.push(format!(
                "  partition 1: EFI system partition, {} at {}",
                ByteSize(size),
                ByteSize(offset)
            ));
        }
        if let Some(g) = &self.gpt {
            lines.push(format!(
                "  partition {}: {} at {}, PARTUUID={}, name {}",
                self.partition_number(),
                ByteSize(self.partition_size),
                ByteSize(self.partition_offset),
                shown(g.partition_guid),
                g.partition_name
            ));
        }
        let label = self.label();
        lines.push(format!(
            "  {} filesystem: {}, UUID={}, LABEL={}, {} inodes of {}-byte blocks",
            self.fs_type,
            ByteSize(self.fs_size()),
            shown(self.uuid),
            if label.is_empty() { "(none)" } else { &label },
            self.fs.inodes,
            self.fs.block_size
        ));
        lines.push(format!(
            "  {} entries, {} of file data; free {}, of which {} available to ordinary users",
            self.entries,
            ByteSize(self.file_bytes),
            ByteSize(self.free_bytes()),
            ByteSize(self.fs.available_bytes())
        ));
        lines
    }

    /// Prints what `--json` and `-q` ask for: the JSON object on stdout (an error if it cannot
    /// be written: a script is waiting for it), the summary on stderr unless `quiet`.
    pub fn print(&self, json: bool, quiet: bool) -> anyhow::Result<()> {
        if !quiet {
            let lines = self.summary();
            progress::line(&lines[0]);
            for l in &lines[1..] {
                progress::text(l);
            }
        }
        if json {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", self.json())
                .and_then(|_| out.flush())
                .context("writing the JSON report to standard output")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            destination: Destination::File("root.img".into()),
            disk_size: 233 << 20,
            partition_offset: 1 << 20,
            partition_size: 231 << 20,
            gpt: Some(Gpt {
                disk_guid: Some(uuid::Uuid::from_u128(1)),
                partition_guid: None,
                partition_type: uuid::Uuid::from_u128(2),
                partition_name: "linux".into(),
            }),
            esp: None,
            fs_type: "ext4",
            fs: Report {
                blocks: 59136,
                block_size: 4096,
                inodes: 7552,
                free_blocks: 3000,
                unavailable_blocks: 2956,
                free_inodes: 800,
                reserved_blocks: 2956,
                journal_blocks: 4096,
                need_blocks: 50000,
                need_inodes: 6700,
                uuid: [0; 16],
                label: *b"root\0\0\0\0\0\0\0\0\0\0\0\0",
            },
            uuid: Some(uuid::Uuid::from_u128(3)),
            entries: 6683,
            file_bytes: 193 << 20,
            elapsed_seconds: 1.23456,
        }
    }

    #[test]
    fn json_has_every_fact_in_bytes() {
        let v = facts().json();
        assert_eq!(v["output"], "root.img");
        assert_eq!(v["fs_size"], 59136 * 4096);
        assert_eq!(v["free_bytes"], 3000 * 4096);
        assert_eq!(v["available_bytes"], 44 * 4096);
        assert_eq!(v["label"], "root");
        assert_eq!(v["partition_guid"], Value::Null);
        assert_eq!(v["disk_guid"], "00000000-0000-0000-0000-000000000001");
        assert_eq!(v["elapsed_seconds"], 1.235);
    }

    #[test]
    fn summary_uses_one_size_style_and_names_the_identifiers() {
        let s = facts().summary().join("\n");
        assert!(s.contains("a 233.0 MiB GPT disk"), "{s}");
        assert!(s.contains("PARTUUID=random"), "{s}");
        assert!(
            s.contains("UUID=00000000-0000-0000-0000-000000000003"),
            "{s}"
        );
        assert!(s.contains("LABEL=root"), "{s}");
        assert!(s.contains("176.0 KiB available to ordinary users"), "{s}");
    }
}
