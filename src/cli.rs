//! The command line: clap definitions only (the man page in man/ describes the same options).

use std::path::PathBuf;

use clap::{CommandFactory, Parser, ValueEnum};

use crate::mkfs::fstype::FsType;
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

    /// Replace OUTPUT if it exists
    #[arg(short, long)]
    pub force: bool,

    /// Print nothing but errors
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,

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

    /// Directory whose contents become the filesystem's root
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

    /// Cross-option rules clap's `requires` cannot express for flags with defaults.
    pub fn check(&self) -> Result<(), clap::Error> {
        if self.serve {
            return Ok(());
        }
        let given = [
            ("--socket", self.socket.is_some()),
            ("--tcp", self.tcp.is_some()),
            ("--run", self.run.is_some()),
            ("--cow", self.cow),
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
