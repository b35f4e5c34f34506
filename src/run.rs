//! The main job, start to end, from parsed options: check OUTPUT, scan SOURCE, make the
//! filesystem, lay out the disk, write the image. Errors come back with their context.

use std::sync::Arc;

use anyhow::{Context, Result};

use crate::cli::{Cli, PartitionMode};
use crate::disk::gpt::{Guids, PARTITION_START};
use crate::disk::Disk;
use crate::identity::{self, Ids};
use crate::mkfs::{self, size::Human, Options, Target};
use crate::nbd::{self, cow::CowExport, Export, ServeOptions};
use crate::progress::Progress;
use crate::source::digest::Normalise;
use crate::source::ArchiveInput;
use crate::{cleanup, image, source};

/// Runs the job; returns the process's exit status (a `--run` command's, when serving).
pub fn run(cli: &Cli) -> Result<i32> {
    if let Some(kind) = cli.generate {
        use std::io::Write;
        let text = crate::cli::generated::text(kind);
        std::io::stdout()
            .lock()
            .write_all(text.as_bytes())
            .context("writing to standard output")?;
        return Ok(0);
    }
    let say = |msg: &str| {
        if cli.verbose {
            eprintln!("linuxdisk-mk: {msg}");
        }
    };
    cleanup::install_signal_handlers()?;
    match &cli.output {
        Some(output) => image::check_output(output, cli.force)?,
        None => nbd::check_options(&serve_options(cli))?,
    }
    // Values past what the filesystem holds are refused before anything is read or written.
    let opts = options(cli)?;
    mkfs::limits::check(&opts)?;
    let epoch = identity::source_date_epoch()?;
    raise_fd_limit();
    let exclude = cli.output.as_deref().and_then(source::identity);

    let progress = Progress::new(!cli.quiet);
    progress.start_entries("scanning", None);
    let scanned = read_source(cli, exclude, &mut || progress.inc_entries(1));
    progress.finish();
    let tree = scanned?;
    say(&format!(
        "{}: {} entries, {} of file data",
        cli.source().display(),
        tree.entries,
        Human(tree.data_bytes)
    ));

    let ids = match epoch {
        Some(t) => {
            let norm = Normalise {
                owner: opts.owner,
                clamp_time: t,
            };
            let mut h = blake3::Hasher::new();
            h.update(&source::digest::digest(&tree, cli.source(), norm)?);
            h.update(canonical_options(cli, &opts).as_bytes());
            Ids::derived(h.finalize().as_bytes())
        }
        None => Ids::random(),
    };
    let opts = Options {
        uuid: *cli.uuid.unwrap_or(ids.fs_uuid).as_bytes(),
        hash_seed: *ids.hash_seed.as_bytes(),
        time: epoch.map_or(opts.time, |t| t as u32),
        clamp_time: epoch,
        ..opts
    };
    let guids = Guids {
        disk: cli.disk_guid.unwrap_or(ids.disk),
        partition: cli.part_guid.unwrap_or(ids.partition),
        part_type: cli.part_type(),
        part_name: cli.part_label.clone(),
    };
    let make_disk = |fs: Arc<std::fs::File>, offset: u64, size: u64| match cli.partition {
        PartitionMode::Gpt => Disk::partitioned_at(fs, offset, size, &guids),
        PartitionMode::None => Disk::bare(fs, size),
    };
    let Some(output) = &cli.output else {
        // Serving: build in an unlinked temp file in TMPDIR.
        let tmp = cleanup::temp_dir();
        let file = Arc::new(
            tempfile::tempfile_in(&tmp)
                .with_context(|| format!("{}: creating a temporary file", tmp.display()))?,
        );
        let target = Target {
            file: &file,
            offset: 0,
            name: &tmp,
        };
        let opts = Options {
            lazy: cli.serving.lazy,
            ..opts
        };
        let built = mkfs::build(cli.source(), &tree, &opts, &target, &progress, &say)?;
        say(&built.report.to_string());
        let disk = make_disk(file.clone(), 0, built.size);
        let at = disk.partition_offset();
        let lazy = built
            .lazy
            .into_iter()
            .map(|p| (at + p.at, p.len, p.data.into()));
        return serve(cli, disk.overlay(lazy.collect()));
    };
    // Writing: build the filesystem in place in OUTPUT's temp file, at the partition offset, so
    // file data is copied once; only the partition table is left to write.
    let out = image::Output::create(output, cli.force, readers(cli, &tree, &say))?;
    let file = out.file().clone();
    let offset = match cli.partition {
        PartitionMode::Gpt => PARTITION_START,
        PartitionMode::None => 0,
    };
    let target = Target {
        file: &file,
        offset,
        name: out.temp_path(),
    };
    let built = mkfs::build(cli.source(), &tree, &opts, &target, &progress, &say)?;
    say(&built.report.to_string());
    let disk = make_disk(file, offset, built.size);
    progress.start_bytes("writing", disk.size());
    let written = out.finish(&disk, &mut |n| progress.inc_position(n));
    progress.finish();
    written?;
    if !cli.quiet {
        let part = match cli.partition {
            PartitionMode::Gpt => {
                format!(", in GPT partition 1 at offset {}", disk.partition_offset())
            }
            PartitionMode::None => String::new(),
        };
        eprintln!(
            "linuxdisk-mk: wrote {}: {} disk, {} filesystem of {}{part}",
            output.display(),
            Human(disk.size()),
            cli.fs_type().name(),
            Human(built.size)
        );
    }
    Ok(0)
}

/// Who may read OUTPUT: its owner only when the tree (or the archive it came from) holds what
/// others may not read; `say` tells why.
fn readers(cli: &Cli, tree: &source::Tree, say: &dyn Fn(&str)) -> image::Readers {
    let src = cli.source();
    let name = src.as_os_str().as_encoded_bytes();
    let secret = source::secret::first_secret(&tree.root, name).or_else(|| {
        use std::os::unix::fs::PermissionsExt;
        // An archive file's own mode counts too (not stdin's: nothing names it).
        if tree.spool.is_none() || src.as_os_str() == "-" {
            return None;
        }
        let perm = std::fs::metadata(src).ok()?.permissions().mode() & 0o7777;
        (perm & 0o004 == 0).then(|| {
            format!(
                "{} is not readable by others (mode {perm:04o})",
                src.display()
            )
        })
    });
    match secret {
        Some(why) => {
            let out = cli.output.as_deref().unwrap_or(src);
            say(&format!(
                "{} is made readable by its owner only: {why}",
                out.display()
            ));
            image::Readers::Owner
        }
        None => image::Readers::Anyone,
    }
}

/// Reads SOURCE: a directory (walked), `-` (a tar stream on stdin) or any other file (a tar
/// archive, compression detected from its bytes).
fn read_source(
    cli: &Cli,
    exclude: Option<(u64, u64)>,
    on_entry: &mut dyn FnMut(),
) -> Result<source::Tree> {
    use std::io::IsTerminal;
    if cli.source().as_os_str() == "-" {
        if std::io::stdin().is_terminal() {
            anyhow::bail!("SOURCE is - (a tar stream on stdin), but stdin is a terminal");
        }
        return source::read_archive(ArchiveInput::Stdin, &cleanup::temp_dir(), on_entry);
    }
    match std::fs::metadata(cli.source()) {
        Ok(m) if !m.is_dir() => source::read_archive(
            ArchiveInput::Path(cli.source().to_path_buf()),
            &cleanup::temp_dir(),
            on_entry,
        ),
        _ => source::scan(
            cli.source(),
            source::ScanOptions {
                exclude,
                skip_unreadable: cli.skip_unreadable,
                one_file_system: cli.one_file_system,
            },
            on_entry,
        ),
    }
}

/// The filesystem options from the command line (identifiers still random).
fn options(cli: &Cli) -> Result<Options> {
    let mut label = [0u8; 16];
    if let Some(l) = &cli.label {
        label[..l.len()].copy_from_slice(l.as_bytes());
    }
    Ok(Options {
        features: cli.features().map_err(anyhow::Error::msg)?,
        block_size: cli.block_size,
        inode_size: cli.inode_size,
        inodes: cli.inodes,
        size: cli.size_spec(),
        label,
        reserved_percent: cli.reserved_percent,
        owner: cli.owner,
        ..Options::new(cli.fs_type())
    })
}

/// Everything about the options that shapes the image, for reproducible identifiers.
fn canonical_options(cli: &Cli, o: &Options) -> String {
    format!(
        "type={} features={:?} bs={} isize={} N={:?} size={:?} label={:?} m={} owner={:?} partition={:?} ptype={} pname={:?}",
        o.fstype.name(),
        o.features,
        o.block_size,
        o.inode_size,
        o.inodes,
        o.size,
        o.label,
        o.reserved_percent,
        o.owner,
        cli.partition,
        cli.part_type(),
        cli.part_label
    )
}

/// The NBD server's options from the command line.
fn serve_options(cli: &Cli) -> ServeOptions {
    ServeOptions {
        socket: cli.serving.socket.clone(),
        tcp: cli.serving.tcp.clone(),
        run: cli.serving.run.clone(),
        export_name: cli.serving.export_name.clone().unwrap_or_default(),
        description: format!(
            "linuxdisk-mk {} of {}",
            cli.fs_type().name(),
            cli.source().display()
        ),
        pidfile: cli.serving.pidfile.clone(),
        quiet: cli.quiet,
    }
}

/// `--serve`: the same disk over NBD, read-only or under a copy-on-write overlay.
fn serve(cli: &Cli, disk: Disk) -> Result<i32> {
    let opts = serve_options(cli);
    let disk: Arc<dyn Export> = Arc::new(disk);
    let export: Arc<dyn Export> = if cli.serving.cow {
        Arc::new(
            CowExport::new(disk, &cleanup::temp_dir())
                .context("creating the copy-on-write overlay")?,
        )
    } else {
        disk
    };
    nbd::serve(export, &opts)
}

/// Deep trees hold one directory descriptor per level: allow as many as the hard limit.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    if l.current < l.maximum {
        l.current = l.maximum;
        let _ = setrlimit(Resource::Nofile, l);
    }
}

/// Runs `f` on a thread with a large stack: directory recursion is as deep as the tree.
pub fn with_big_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .name("linuxdisk-mk".into())
        .stack_size(512 << 20)
        .spawn(f)
        .context("starting the worker thread")
        .expect("thread spawn")
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
}
