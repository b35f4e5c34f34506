//! The command line's one definition (clap derive): every option, its help and its value parser.
//! `--help`, the man page's option sections and the shell completions all come from here.
//!
//! Standalone on purpose (clap, uuid and `values.rs` only): `build.rs` compiles this file to
//! generate the man page and completions; typed conversions live in `cli/mod.rs`.

use std::path::PathBuf;

use clap::{Args, Parser, ValueEnum};

use super::values::{
    parse_block_size, parse_inode_size, parse_label, parse_owner, parse_part_label, parse_percent,
    parse_size, SizeArg,
};

/// Filesystem type (`-t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FsTypeArg {
    /// No journal (the default, as nbdkit's linuxdisk plugin)
    Ext2,
    /// ext2 with a journal
    Ext3,
    /// Journal, extents, 64bit, flex_bg, metadata checksums
    Ext4,
}

/// How the filesystem is presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PartitionMode {
    /// A GPT disk with one Linux filesystem partition starting at 1 MiB.
    Gpt,
    /// The bare filesystem, no partition table.
    None,
}

/// What `--generate` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Generate {
    /// The man page (roff), as man/linuxdisk-mk.1
    Man,
    /// Completions for bash
    CompleteBash,
    /// Completions for zsh
    CompleteZsh,
    /// Completions for fish
    CompleteFish,
}

/// Turn a directory or a tar archive into a disk image: a GPT disk whose partition holds an
/// ext2, ext3 or ext4 filesystem made with libext2fs, with every file, owner, mode, time, link,
/// device and extended attribute of the tree.
#[derive(Debug, Parser)]
#[command(
    name = "linuxdisk-mk",
    version,
    max_term_width = 100,
    override_usage = "linuxdisk-mk [OPTIONS] SOURCE OUTPUT\n       \
                      linuxdisk-mk --serve [SERVE OPTIONS] [OPTIONS] SOURCE\n       \
                      linuxdisk-mk --generate KIND"
)]
pub struct Cli {
    /// Filesystem type
    #[arg(short = 't', long = "type", value_name = "TYPE", value_enum, default_value_t = FsTypeArg::Ext2)]
    pub fstype: FsTypeArg,

    /// Filesystem label (at most 16 bytes)
    #[arg(short = 'L', long, value_parser = parse_label)]
    pub label: Option<String>,

    /// Filesystem size: SIZE is the total size, +SIZE the minimum free space once the files are
    /// in. Suffixes K, M, G, T, P are powers of 1024; a bare number is bytes
    ///
    /// Without --size, the filesystem is the smallest that holds the tree with about 3% of its
    /// blocks free (always between 1% and 10%) and about 10% more inodes than entries (at least
    /// 512 spare). The 5% root reserve counts as free, as in dumpe2fs. A size too small for the
    /// tree fails before anything is written and says how much is needed. With an explicit SIZE
    /// there is one inode per 16 KiB (as mke2fs), or more if the tree needs them.
    #[arg(long, value_name = "[+]SIZE", value_parser = parse_size)]
    pub size: Option<SizeArg>,

    /// Partition table: gpt (one partition at 1 MiB) or none (the bare filesystem, as nbdkit's
    /// partition filter would serve it)
    #[arg(long, value_enum, default_value_t = PartitionMode::Gpt)]
    pub partition: PartitionMode,

    /// Filesystem block size in bytes: 1024, 2048 or 4096
    ///
    /// A symlink target must be shorter than a block, and one inode's extended attributes must
    /// fit in its spare space plus one block.
    #[arg(long, value_name = "BYTES", default_value_t = 4096, value_parser = parse_block_size)]
    pub block_size: u32,

    /// Give every entry this owner (numeric), e.g. 0:0 to build a root-owned tree as a user
    #[arg(long, value_name = "UID:GID", value_parser = parse_owner)]
    pub owner: Option<(u32, u32)>,

    /// Filesystem features to turn on or (with ^) off, as mke2fs -O: e.g. ^metadata_csum,inline_data
    ///
    /// A comma-separated list of has_journal, ext_attr, resize_inode, dir_index, filetype,
    /// extent, flex_bg, 64bit, inline_data, sparse_super, large_file, huge_file, dir_nlink,
    /// extra_isize, metadata_csum, or none. For example ^metadata_csum for kernels older than
    /// 3.18. 64bit needs extent.
    #[arg(short = 'O', long = "features", value_name = "FEATURES")]
    pub features: Option<String>,

    /// Number of inodes (at least what the tree needs) [default: the tree's entries plus 10%, at
    /// least 512 spare; with --size, one per 16 KiB]
    #[arg(short = 'N', long = "inodes", value_name = "COUNT")]
    pub inodes: Option<u64>,

    /// Percentage of blocks reserved for root
    #[arg(short = 'm', long = "reserved-percent", value_name = "PERCENT", default_value_t = 5.0, value_parser = parse_percent)]
    pub reserved_percent: f64,

    /// Inode size in bytes, a power of two from 128 to the block size
    ///
    /// 128-byte inodes have no room for nanoseconds, creation times or dates after 2038
    /// (extra_isize is then turned off).
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

    /// Partition type: a GUID or a Discoverable Partitions name (linux, root-x86-64, root-x86,
    /// root-arm64, root-arm, root-riscv64, usr-x86-64, usr-x86, usr-arm64, usr-arm, usr-riscv64,
    /// home, srv, var, tmp, esp, xbootldr, swap)
    ///
    /// linux is 0FC63DAF-8483-4772-8E79-3D69D8477DE4, "Linux filesystem data".
    #[arg(long, value_name = "NAME|GUID", default_value = "linux")]
    pub part_type: String,

    /// Partition name (at most 36 UTF-16 code units)
    #[arg(long, value_name = "NAME", default_value = "linux", value_parser = parse_part_label)]
    pub part_label: String,

    /// Replace OUTPUT if it exists
    ///
    /// The old OUTPUT is replaced atomically, by rename, once the new one is complete. Without
    /// -f an existing OUTPUT is an error and stays untouched.
    #[arg(short, long)]
    pub force: bool,

    /// Print nothing but errors
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Leave out, with a warning, files and directories that cannot be read (default: an
    /// error naming them)
    ///
    /// A file that cannot be opened, or a directory that cannot be listed or searched, is left
    /// out with a warning naming it on stderr. Without this option such an entry is an error
    /// naming it, and nothing is written.
    #[arg(long)]
    pub skip_unreadable: bool,

    /// Stay on SOURCE's filesystem: keep each mount point inside it, empty, without what is
    /// mounted there (as tar, rsync, du and cp -x)
    ///
    /// A directory with another filesystem (or a bind mount) mounted on it is kept as an empty
    /// directory, a file with one mounted on it as an empty file; like tar and rsync, they keep
    /// the owner, mode and times of what is mounted there, since what lies beneath is hidden
    /// by the mount. Unlike tar and rsync, which compare device numbers, a bind mount of
    /// SOURCE's own filesystem counts as a mount point too: its contents come from elsewhere.
    /// Without -x every mount point crossed is named in a warning, and a filesystem of the
    /// kernel's state (proc, sysfs, cgroup, debugfs...) mounted in SOURCE is an error: its
    /// files are not data an image should hold.
    #[arg(short = 'x', long)]
    pub one_file_system: bool,

    /// Say what was chosen (sizes, inode counts, free space)
    #[arg(short, long)]
    pub verbose: bool,

    /// Print the man page or a shell's completions, generated from these definitions, and exit
    #[arg(long, value_name = "KIND", value_enum, exclusive = true)]
    pub generate: Option<Generate>,

    /// Directory whose contents become the filesystem's root, or a tar archive (plain, gzip, xz,
    /// bzip2 or zstd), or - for a tar stream on stdin
    #[arg(value_name = "SOURCE", required_unless_present = "generate")]
    pub source: Option<PathBuf>,

    /// Disk image file to write (not with --serve)
    #[arg(
        value_name = "OUTPUT",
        required_unless_present_any = ["serve", "generate"],
        conflicts_with = "serve"
    )]
    pub output: Option<PathBuf>,

    #[command(flatten)]
    pub serving: ServeArgs,
}

/// The options of `--serve`, under their own help heading. Every one but `--serve` needs it
/// (checked in `cli/mod.rs`: clap's `requires` counts the default `false` as given).
#[derive(Debug, Args)]
#[command(next_help_heading = "Serving over NBD")]
pub struct ServeArgs {
    /// Serve the disk over NBD instead of writing OUTPUT (read-only unless --cow)
    ///
    /// The same disk is built, in an unlinked temporary file in TMPDIR, and served over the
    /// Network Block Device protocol as nbdkit's linuxdisk plugin does, until SIGINT or SIGTERM
    /// or, with --run, until the command exits.
    #[arg(long)]
    pub serve: bool,

    /// Listen on this Unix socket (mode 0600, removed on exit)
    #[arg(long, value_name = "PATH", conflicts_with = "tcp")]
    pub socket: Option<PathBuf>,

    /// Listen on TCP, on 127.0.0.1 unless an address is given [default without --socket or
    /// --run: 127.0.0.1:10809]
    #[arg(long, value_name = "[ADDR:]PORT")]
    pub tcp: Option<String>,

    /// Captive mode: once listening, run `sh -c CMD` with $uri, $nbd, $unixsocket, $port and
    /// $exportname set; stop when it exits and exit with its status
    ///
    /// URIs are written as nbdkit writes them: nbd+unix:///?socket=PATH or nbd://HOST:PORT.
    /// Without a listener option the server uses a private Unix socket in a temporary
    /// directory.
    #[arg(long, value_name = "CMD")]
    pub run: Option<String>,

    /// Let clients write: writes go to a copy-on-write overlay in TMPDIR, never to SOURCE
    ///
    /// One sparse, unlinked overlay file is shared by all connections. As with nbdkit's cow
    /// filter, let only one client use a writable export at a time.
    #[arg(long)]
    pub cow: bool,

    /// Don't copy file data: answer reads of it from the files in SOURCE, which must not change
    /// while served (a changed file's reads fail with EIO)
    ///
    /// The filesystem's metadata is built as usual and reads of file data are answered from
    /// SOURCE (or a tar archive's spool) when a client asks, so the server is ready in the time
    /// it takes to scan the tree. The disk is byte for byte the one served without --lazy.
    /// Files are reached only through the directories the scan opened, and every read checks
    /// the file's device, inode, size, modification and change time against the scan: a file
    /// changed since answers EIO and is named once on stderr.
    #[arg(long)]
    pub lazy: bool,

    /// Export name clients ask for (default: the empty name; other names are refused)
    #[arg(long, value_name = "NAME")]
    pub export_name: Option<String>,

    /// Write the server's process ID to FILE once it is listening
    #[arg(long, value_name = "FILE")]
    pub pidfile: Option<PathBuf>,
}
