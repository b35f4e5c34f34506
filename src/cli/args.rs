//! The command line's one definition (clap derive): every option, its help and its value parser.
//! `--help`, the man page's option sections and the shell completions all come from here.
//!
//! Standalone on purpose (clap, uuid and `values.rs` only): `build.rs` compiles this file to
//! generate the man page and completions; typed conversions live in `cli/mod.rs`.

use std::ffi::OsString;
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

/// `--tls`: whether clients may, must or cannot use TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsArg {
    /// No TLS: NBD_OPT_STARTTLS is refused
    Off,
    /// Clients may use TLS or not (so anyone may read the disk without it)
    On,
    /// Clients must use TLS: before NBD_OPT_STARTTLS every option is refused
    Require,
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

/// Turn a directory, a tar archive or a container image into a disk image: a GPT disk whose
/// partition holds an ext2, ext3 or ext4 filesystem made with libext2fs, with every file, owner,
/// mode, time, link, device and extended attribute of the tree.
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
    /// Without --size, the filesystem is the smallest that holds the tree and leaves about 5% of
    /// it (always 1% to 10%, and never less than 16 MiB) available to ordinary users, as df
    /// shows it: beyond the root reserve (-m) and, on ext4, the kernel's own reserve. Inodes:
    /// about 10% more than entries (at least 512 spare). Enough for a system to boot and log;
    /// a VM that writes wants more: --size +1G. A size too small for the tree fails before
    /// anything is written and says how much is needed. With an explicit SIZE there is one
    /// inode per 16 KiB (as mke2fs), or more if the tree needs them.
    #[arg(long, value_name = "[+]SIZE", value_parser = parse_size)]
    pub size: Option<SizeArg>,

    /// Partition table: gpt (one partition at 1 MiB) or none (the bare filesystem, as nbdkit's
    /// partition filter would serve it)
    #[arg(long, value_enum, default_value_t = PartitionMode::Gpt)]
    pub partition: PartitionMode,

    /// Filesystem block size in bytes: 1024, 2048 or 4096 (-b as mke2fs)
    ///
    /// A symlink target must be shorter than a block, and one inode's extended attributes must
    /// fit in its spare space plus one block.
    #[arg(short = 'b', long, value_name = "BYTES", default_value_t = 4096, value_parser = parse_block_size)]
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

    /// Filesystem UUID (-U as mke2fs) [default: random, or derived from the tree under
    /// SOURCE_DATE_EPOCH]
    #[arg(short = 'U', long, value_name = "UUID")]
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
    /// linux is 0FC63DAF-8483-4772-8E79-3D69D8477DE4, "Linux filesystem data". With --efi the
    /// default is root-x86-64.
    #[arg(long, value_name = "NAME|GUID", default_value = "linux")]
    pub part_type: String,

    /// Partition name (at most 36 UTF-16 code units) [default: the --part-type name, as
    /// systemd-repart names partitions, e.g. linux or root-x86-64]
    #[arg(long, value_name = "NAME", value_parser = parse_part_label)]
    pub part_label: Option<String>,

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

    /// Stay on each source's filesystem: keep each mount point inside SOURCE (or an --add
    /// directory), empty, without what is mounted there (as tar, rsync, du and cp -x)
    ///
    /// A directory with another filesystem (or a bind mount) mounted on it is kept as an empty
    /// directory, a file with one mounted on it as an empty file; like tar and rsync, they keep
    /// the owner, mode and times of what is mounted there, since what lies beneath is hidden
    /// by the mount. Unlike tar and rsync, which compare device numbers, a bind mount of the
    /// source's own filesystem counts as a mount point too: its contents come from elsewhere.
    /// Without -x every mount point crossed is named in a warning, and a filesystem of the
    /// kernel's state (proc, sysfs, cgroup, debugfs...) mounted in a source is an error: its
    /// files are not data an image should hold.
    #[arg(short = 'x', long)]
    pub one_file_system: bool,

    /// Say what was chosen (sizes, inode counts, free space), what each phase did and how file
    /// data went in
    ///
    /// When standard error is not a terminal, also print a progress line every 5 seconds.
    ///
    /// One line says how the file data went into the filesystem, in bytes: cloned (sharing the
    /// source's extents: SOURCE and OUTPUT, or TMPDIR when serving, on one filesystem such as
    /// XFS or btrfs), copied in the kernel (copy_file_range), and copied.
    #[arg(short, long)]
    pub verbose: bool,

    /// Print what was made as one JSON object on standard output (sizes in bytes)
    ///
    /// The keys: output (OUTPUT; with --serve, uri instead), disk_size, partition_table,
    /// partition_offset, partition_size, partition_guid, partition_type, partition_name,
    /// disk_guid, fs_type, fs_size, block_size, blocks, inodes, free_inodes, entries,
    /// file_bytes, free_bytes, available_bytes (free to ordinary users: free_bytes less the root
    /// reserve), uuid, label, elapsed_seconds. GUIDs and UUIDs are lower-case; with --partition
    /// none the GPT keys are null, and partition_offset is 0 and partition_size the
    /// filesystem's size. With --serve, the object is printed once the server listens, before
    /// any --run command starts.
    #[arg(long)]
    pub json: bool,

    /// Scan SOURCE and plan the disk, print what would be made, and write nothing
    ///
    /// The filesystem's metadata is built in an unlinked temporary file in TMPDIR (no file data
    /// is copied), so every figure is the one the same command without --dry-run makes. With
    /// --json, the same object without output; identifiers that would be random are null.
    #[arg(short = 'n', long, conflicts_with = "serve")]
    pub dry_run: bool,

    /// Add a directory, tar archive, container image or file at DEST in the image (default
    /// /); repeatable, applied in order over SOURCE
    ///
    /// SRC is read as SOURCE is (a directory, an OCI image layout, a tar archive plain or
    /// compressed, an OCI or docker-save archive, - for stdin), or, when it is a regular file
    /// that is not an archive (or a device node), as that one file. Nothing is copied to the
    /// host: the sources are merged in memory and each file is read from its own source. A
    /// later entry replaces an earlier one at the same path; a directory over a directory
    /// merges (the later one's mode, owner, times and attributes, the entries of both). A
    /// directory or archive is merged into DEST, which keeps its own metadata if it exists; a
    /// file becomes DEST, or goes into DEST when DEST ends in / or is a directory. Missing
    /// parents of DEST are made (0755, owner 0:0 or --owner's). DEST is resolved in the image
    /// as in a chroot: symlinks on the way are followed (/lib to usr/lib); one at DEST itself
    /// only when it leads to a directory. Hard links never join files of two sources. SRC is
    /// everything before the last ":/": a SRC containing ":/" needs an explicit DEST (a:/b:/),
    /// and a DEST cannot contain ":/". Works with --serve and --lazy (files are read from
    /// their sources when asked), --owner and SOURCE_DATE_EPOCH (the digest covers every
    /// source).
    #[arg(long = "add", value_name = "SRC[:DEST]")]
    pub add: Vec<OsString>,

    /// Which image of a multi-platform container image to use [default: this machine's, e.g.
    /// linux/amd64]
    ///
    /// OS/ARCH or OS/ARCH/VARIANT as in an OCI image index (linux/arm64/v8, linux/arm/v7). An
    /// image without a platform in its index is matched by its config's os and architecture.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,

    /// Store all-zero blocks of directory sources' files as holes, as cp --sparse=always
    ///
    /// Files are read once more while the tree is scanned. Holes a file already has are always
    /// kept; files from tar archives and container images always have their all-zero blocks
    /// stored as holes (their bytes pass through anyway).
    #[arg(long)]
    pub sparse: bool,

    /// Print the man page or a shell's completions, generated from these definitions, and exit
    #[arg(long, value_name = "KIND", value_enum, exclusive = true)]
    pub generate: Option<Generate>,

    /// Directory whose contents become the filesystem's root, or a tar archive (plain, gzip, xz,
    /// bzip2 or zstd), or - for a tar stream on stdin, or a container image: an OCI image
    /// layout directory, an OCI archive or a docker-save archive
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

    #[command(flatten)]
    pub efi: EfiArgs,
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
    /// URIs are written as nbdkit writes them: nbd+unix:///?socket=PATH or nbd://HOST:PORT
    /// (with --tls=require, nbds+unix:// or nbds:// with the keys' path, see --tls). Without a
    /// listener option the server uses a private Unix socket in a temporary directory.
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
    /// SOURCE and the --add sources (or an archive's spool) when a client asks, so the server is
    /// ready in the time it takes to scan the tree. The disk is byte for byte the one served
    /// without --lazy.
    /// Files are reached only through the directories the scans opened, and every read checks
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

    /// TLS, as nbdkit's --tls: off, on (optional for clients) or require [default: require
    /// with --tls-certificates or --tls-psk, otherwise off]
    ///
    /// With require, a client must send NBD_OPT_STARTTLS and complete the TLS handshake before
    /// anything else is answered (other options get NBD_REP_ERR_TLS_REQD), so a client without
    /// the key or an accepted certificate learns nothing and holds a place only until the
    /// 10-second handshake deadline. With --run, $uri then carries what libnbd needs:
    /// nbds+unix://USER@/?socket=PATH&tls-psk-file=FILE, or tls-certificates=DIR.
    #[arg(long, value_name = "MODE", value_enum)]
    pub tls: Option<TlsArg>,

    /// TLS with X.509 certificates from DIR: ca-cert.pem, server-cert.pem and server-key.pem,
    /// as nbdkit's --tls-certificates
    ///
    /// Without --tls-verify-peer, TLS encrypts but does not tell who the client is: anyone
    /// who can connect can read the disk.
    #[arg(long, value_name = "DIR", conflicts_with = "tls_psk")]
    pub tls_certificates: Option<PathBuf>,

    /// TLS with pre-shared keys: FILE holds USERNAME:HEXKEY lines, as GnuTLS's psktool writes
    /// them (psktool -u alice -p FILE)
    ///
    /// Only clients that know one of the keys can complete the handshake.
    #[arg(long, value_name = "FILE")]
    pub tls_psk: Option<PathBuf>,

    /// With --tls-certificates: accept only clients whose certificate ca-cert.pem signed
    #[arg(long)]
    pub tls_verify_peer: bool,

    /// Serve at most N clients at once (in the transmission phase)
    ///
    /// Besides them, up to N (at least 64) connections may be in the handshake, each for at
    /// most 10 seconds; when that many are, the one there longest is dropped to make room. A
    /// client that completes its handshake while N others are served is refused
    /// (NBD_REP_ERR_POLICY).
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
}

/// The options of `--efi`, under their own help heading. Every one but `--efi` needs it
/// (checked in `cli/mod.rs`, as for the serving options).
#[derive(Debug, Args)]
#[command(next_help_heading = "Booting on its own under UEFI")]
pub struct EfiArgs {
    /// Make the disk boot on its own under UEFI: partition 1 an EFI system partition with
    /// systemd-boot, a boot entry and the tree's kernel and initrd; partition 2 the filesystem
    ///
    /// Partition 1 (type C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name esp) is a FAT32 volume
    /// written by linuxdisk-mk itself, sized to its files plus a quarter, at least 33 MiB (FAT32
    /// needs 65,525 clusters, and UEFI wants FAT32 on a system partition). It holds
    /// EFI/BOOT/BOOTX64.EFI (the tree's /usr/lib/systemd/boot/efi/systemd-bootx64.efi, or
    /// --efi-loader), loader/loader.conf (timeout 0), a Boot Loader Specification entry
    /// loader/entries/ID-VERSION.conf (ID from the tree's os-release, else linux) and the kernel
    /// and initrd as /ID/VERSION/linux and /ID/VERSION/initrd: by default the newest
    /// /boot/vmlinuz-VERSION (compared as sort -V) and its /boot/initrd.img-VERSION (or
    /// initramfs-VERSION.img, initrd-VERSION.img, initrd-VERSION). The kernel command line is
    /// root=PARTUUID=(partition 2) rw, then --cmdline. Partition 2 is the filesystem, of type
    /// root-x86-64 unless --part-type says otherwise. x86-64 firmware only.
    #[arg(long)]
    pub efi: bool,

    /// The boot loader to install as EFI/BOOT/BOOTX64.EFI: a file on the host (default: the
    /// tree's systemd-boot)
    ///
    /// A host path, not a path in the tree: for trees without systemd-boot (a container image,
    /// say), give the host's /usr/lib/systemd/boot/efi/systemd-bootx64.efi. It must be an EFI
    /// (PE) executable; under SOURCE_DATE_EPOCH its bytes count in the derived identifiers.
    #[arg(long, value_name = "FILE")]
    pub efi_loader: Option<PathBuf>,

    /// The kernel, a path inside the tree (symlinks followed inside the tree) [default: the
    /// newest /boot/vmlinuz-VERSION]
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,

    /// The initrd, a path inside the tree [default: the kernel version's initrd in the kernel's
    /// directory]
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,

    /// More kernel command line, after root=PARTUUID=UUID rw (e.g. console=ttyS0)
    #[arg(long, value_name = "ARGS")]
    pub cmdline: Option<String>,
}
