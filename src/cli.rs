//! The command line: clap definitions only (the man page in man/ describes the same options).

use std::path::PathBuf;

use clap::{CommandFactory, Parser, ValueEnum};

use crate::mkfs::fstype::{Features, FsType};
use crate::mkfs::size::SizeSpec;

/// How the filesystem is presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PartitionMode {
    /// A GPT disk with one Linux filesystem partition starting at 1 MiB.
    Gpt,
    /// The bare filesystem, no partition table.
    None,
}

/// Turn a directory into a disk image: one GPT partition holding an ext2, ext3 or ext4
/// filesystem made with libext2fs, with every file, owner, mode, time, link, device and
/// extended attribute of the tree.
#[derive(Debug, Parser)]
#[command(name = "linuxdisk-mk", version, max_term_width = 100)]
pub struct Cli {
    /// Filesystem type
    #[arg(short = 't', long = "type", value_name = "TYPE", value_enum, default_value_t = FsType::Ext2)]
    pub fstype: FsType,

    /// Filesystem label (at most 16 bytes)
    #[arg(short = 'L', long, value_parser = parse_label)]
    pub label: Option<String>,

    /// Filesystem size: SIZE is the total size, +SIZE the minimum free space after the files
    /// are in. Suffixes K, M, G, T are powers of 1024. Default: just big enough (1-10% free)
    #[arg(long, value_name = "[+]SIZE", allow_hyphen_values = false)]
    pub size: Option<SizeSpec>,

    /// Partition table: gpt (one partition at 1 MiB) or none (the bare filesystem)
    #[arg(long, value_enum, default_value_t = PartitionMode::Gpt)]
    pub partition: PartitionMode,

    /// Filesystem block size in bytes
    #[arg(long, value_name = "BYTES", default_value_t = 4096, value_parser = parse_block_size)]
    pub block_size: u32,

    /// Give every entry this owner (numeric), e.g. 0:0 to build a root-owned tree as a user
    #[arg(long, value_name = "UID:GID", value_parser = parse_owner)]
    pub owner: Option<(u32, u32)>,

    /// Filesystem features to turn on or (with ^) off, as mke2fs -O: e.g. ^metadata_csum,inline_data
    #[arg(short = 'O', long = "features", value_name = "FEATURES")]
    pub features: Option<String>,

    /// Number of inodes (at least what the tree needs) [default: the tree's entries plus 10%, at
    /// least 512 spare; with --size, one per 16 KiB]
    #[arg(short = 'N', long = "inodes", value_name = "COUNT")]
    pub inodes: Option<u64>,

    /// Percentage of blocks reserved for root
    #[arg(short = 'm', long = "reserved-percent", value_name = "PERCENT", default_value_t = 5.0, value_parser = parse_percent)]
    pub reserved_percent: f64,

    /// Inode size in bytes (128 loses nanoseconds and dates after 2038)
    #[arg(short = 'I', long = "inode-size", value_name = "BYTES", default_value_t = 256, value_parser = parse_inode_size)]
    pub inode_size: u16,

    /// Filesystem UUID [default: random, or derived from the tree under SOURCE_DATE_EPOCH]
    #[arg(long, value_name = "UUID")]
    pub uuid: Option<uuid::Uuid>,

    /// GPT disk GUID [default: random, or derived under SOURCE_DATE_EPOCH]
    #[arg(long, value_name = "GUID")]
    pub disk_guid: Option<uuid::Uuid>,

    /// GPT partition GUID [default: random, or derived under SOURCE_DATE_EPOCH]
    #[arg(long, value_name = "GUID")]
    pub part_guid: Option<uuid::Uuid>,

    /// Partition type: a GUID or a Discoverable Partitions name (linux, root-x86-64, root-arm64,
    /// usr-x86-64, usr-arm64, home, srv, var, tmp, esp, xbootldr, swap, ...)
    #[arg(long, value_name = "NAME|GUID", default_value = "linux", value_parser = crate::disk::gpt::parse_part_type)]
    pub part_type: uuid::Uuid,

    /// Partition name (at most 36 UTF-16 code units)
    #[arg(long, value_name = "NAME", default_value = "linux", value_parser = parse_part_label)]
    pub part_label: String,

    /// Replace OUTPUT if it exists
    #[arg(short, long)]
    pub force: bool,

    /// Print nothing but errors
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Leave out, with a warning, files and directories that cannot be read (default: an
    /// error naming them)
    #[arg(long)]
    pub skip_unreadable: bool,

    /// Say what was chosen (sizes, inode counts, free space)
    #[arg(short, long)]
    pub verbose: bool,

    /// Serve the disk over NBD instead of writing OUTPUT (read-only unless --cow)
    #[arg(long, help_heading = "Serving over NBD")]
    pub serve: bool,

    /// Listen on this Unix socket (mode 0600, removed on exit)
    #[arg(
        long,
        value_name = "PATH",
        requires = "serve",
        conflicts_with = "tcp",
        help_heading = "Serving over NBD"
    )]
    pub socket: Option<PathBuf>,

    /// Listen on TCP, on 127.0.0.1 unless an address is given [default without --socket or
    /// --run: 127.0.0.1:10809]
    #[arg(
        long,
        value_name = "[ADDR:]PORT",
        requires = "serve",
        help_heading = "Serving over NBD"
    )]
    pub tcp: Option<String>,

    /// Captive mode: once listening, run `sh -c CMD` with $uri, $nbd, $unixsocket, $port and
    /// $exportname set; stop when it exits and exit with its status
    #[arg(
        long,
        value_name = "CMD",
        requires = "serve",
        help_heading = "Serving over NBD"
    )]
    pub run: Option<String>,

    /// Let clients write: writes go to a copy-on-write overlay in TMPDIR, never to SOURCE
    #[arg(long, help_heading = "Serving over NBD")]
    pub cow: bool,

    /// Don't copy file data: answer reads of it from the files in SOURCE, which must not change
    /// while served (a changed file's reads fail with EIO)
    #[arg(long, help_heading = "Serving over NBD")]
    pub lazy: bool,

    /// Export name clients ask for
    #[arg(
        long,
        value_name = "NAME",
        requires = "serve",
        default_value = "",
        help_heading = "Serving over NBD"
    )]
    pub export_name: String,

    /// Write the server's process ID to FILE once it is listening
    #[arg(
        long,
        value_name = "FILE",
        requires = "serve",
        help_heading = "Serving over NBD"
    )]
    pub pidfile: Option<PathBuf>,

    /// Directory whose contents become the filesystem's root, or a tar archive (plain, gzip, xz,
    /// bzip2 or zstd), or - for a tar stream on stdin
    #[arg(value_name = "SOURCE")]
    pub source: PathBuf,

    /// Disk image file to write (not with --serve)
    #[arg(
        value_name = "OUTPUT",
        required_unless_present = "serve",
        conflicts_with = "serve"
    )]
    pub output: Option<PathBuf>,
}

impl Cli {
    /// Parses the command line; usage errors (exit 2) include serving options without --serve.
    pub fn parse_args() -> Cli {
        let cli = Cli::parse();
        if let Err(e) = cli.check() {
            e.exit();
        }
        cli
    }

    /// The filesystem features: the type's defaults with the -O edits applied.
    pub fn features(&self) -> Result<Features, String> {
        let mut f = self.fstype.features();
        if self.inode_size == 128 {
            // No room for the extra fields: like mke2fs, don't claim them.
            f = f.edit("^extra_isize")?;
        }
        match &self.features {
            Some(list) => f.edit(list),
            None => Ok(f),
        }
    }

    /// Cross-option rules clap's `requires` cannot express for flags with defaults.
    pub fn check(&self) -> Result<(), clap::Error> {
        if let Err(e) = self.features() {
            return Err(
                Cli::command().error(clap::error::ErrorKind::InvalidValue, format!("-O: {e}"))
            );
        }
        if self.inode_size as u32 > self.block_size {
            return Err(Cli::command().error(
                clap::error::ErrorKind::InvalidValue,
                format!(
                    "--inode-size {} is larger than the block size {}",
                    self.inode_size, self.block_size
                ),
            ));
        }
        if self.serve {
            return Ok(());
        }
        let given = [
            ("--socket", self.socket.is_some()),
            ("--tcp", self.tcp.is_some()),
            ("--run", self.run.is_some()),
            ("--cow", self.cow),
            ("--lazy", self.lazy),
            ("--export-name", !self.export_name.is_empty()),
            ("--pidfile", self.pidfile.is_some()),
        ];
        match given.iter().find(|g| g.1) {
            Some((name, _)) => Err(Cli::command().error(
                clap::error::ErrorKind::MissingRequiredArgument,
                format!("{name} needs --serve"),
            )),
            None => Ok(()),
        }
    }
}

fn parse_owner(s: &str) -> Result<(u32, u32), String> {
    let (u, g) = s
        .split_once(':')
        .ok_or_else(|| format!("'{s}' is not UID:GID"))?;
    let num = |x: &str| {
        x.parse::<u32>()
            .map_err(|_| format!("'{x}' is not a numeric id"))
    };
    Ok((num(u)?, num(g)?))
}

fn parse_percent(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=50.0).contains(&p) => Ok(p),
        _ => Err(format!("'{s}' is not a percentage from 0 to 50")),
    }
}

fn parse_inode_size(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(n) if n >= 128 && n.is_power_of_two() && n <= 4096 => Ok(n),
        _ => Err(format!("'{s}' is not a power of two from 128 to 4096")),
    }
}

fn parse_part_label(s: &str) -> Result<String, String> {
    let units = s.encode_utf16().count();
    if units > 36 {
        return Err(format!(
            "'{s}' is {units} UTF-16 code units; a GPT partition name holds 36"
        ));
    }
    Ok(s.to_string())
}

fn parse_label(s: &str) -> Result<String, String> {
    if s.len() > 16 {
        return Err(format!(
            "'{s}' is {} bytes; an ext2/3/4 label holds at most 16",
            s.len()
        ));
    }
    Ok(s.to_string())
}

fn parse_block_size(s: &str) -> Result<u32, String> {
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
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn labels_longer_than_16_bytes_are_refused() {
        assert!(parse_label("0123456789abcdef").is_ok());
        assert!(parse_label("0123456789abcdefg").is_err());
        assert!(parse_label("ééééééééé").is_err()); // 18 bytes
    }

    #[test]
    fn defaults_follow_the_seed() {
        let c = Cli::try_parse_from(["linuxdisk-mk", "dir", "out.img"]).unwrap();
        assert_eq!(c.fstype, FsType::Ext2);
        assert_eq!(c.block_size, 4096);
        assert_eq!(c.partition, PartitionMode::Gpt);
        assert!(c.size.is_none());
        assert!(!c.serve);
    }

    #[test]
    fn mke2fs_knobs_parse() {
        let c = Cli::try_parse_from([
            "linuxdisk-mk",
            "-t",
            "ext4",
            "-O",
            "^metadata_csum,inline_data",
            "-N",
            "5000",
            "-m",
            "0.5",
            "-I",
            "512",
            "--owner",
            "0:0",
            "--part-type",
            "root-x86-64",
            "d",
            "o",
        ])
        .unwrap();
        assert!(c.check().is_ok());
        assert!(!c.features().unwrap().has_metadata_csum());
        assert_eq!(
            (c.inodes, c.reserved_percent, c.inode_size, c.owner),
            (Some(5000), 0.5, 512, Some((0, 0)))
        );
        assert_eq!(
            c.part_type.to_string().to_uppercase(),
            "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
        );
        let bad = Cli::try_parse_from(["linuxdisk-mk", "-O", "nonsense", "d", "o"]).unwrap();
        assert!(bad.check().is_err());
        assert!(Cli::try_parse_from(["linuxdisk-mk", "--owner", "root", "d", "o"]).is_err());
        assert!(Cli::try_parse_from(["linuxdisk-mk", "-I", "100", "d", "o"]).is_err());
        assert!(Cli::try_parse_from(["linuxdisk-mk", "--part-type", "nope", "d", "o"]).is_err());
    }

    #[test]
    fn serving_takes_no_output() {
        let c =
            Cli::try_parse_from(["linuxdisk-mk", "--serve", "--socket", "/tmp/s", "dir"]).unwrap();
        assert!(c.serve && c.output.is_none());
        assert!(Cli::try_parse_from(["linuxdisk-mk", "--serve", "dir", "out.img"]).is_err());
        assert!(Cli::try_parse_from(["linuxdisk-mk", "dir"]).is_err());
        let c = Cli::try_parse_from(["linuxdisk-mk", "--cow", "dir", "out.img"]).unwrap();
        assert!(c.check().is_err());
    }
}
