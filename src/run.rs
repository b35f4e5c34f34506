//! The main job, start to end, from parsed options: check SOURCE and OUTPUT, scan SOURCE, make
//! the filesystem, lay out the disk, write the image (or serve it, or with --dry-run only say
//! what it would be), then report what was made. Errors come back with their context.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::cli::{Cli, PartitionMode};
use crate::copy::CopyStats;
use crate::disk::boot_files::{self, EfiOptions, Loader};
use crate::disk::esp::{self, EspIds};
use crate::disk::gpt::{self, Guids, PARTITION_START};
use crate::disk::{Disk, Part, Source};
use crate::identity::{self, Ids};
use crate::mkfs::{self, Options, Target};
use crate::nbd::{self, cow::CowExport, Export, ServeOptions};
use crate::progress::{self, ByteSize, Mode, Progress};
use crate::report::{self, Destination, Facts};
use crate::source::digest::Normalise;
use crate::source::input::{self, ReadOptions};
use crate::source::oci::ImageOptions;
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
    let started = Instant::now();
    let say = |msg: &str| {
        if cli.verbose {
            progress::line(msg);
        }
    };
    cleanup::install_signal_handlers()?;
    match &cli.output {
        Some(output) => {
            image::check_order(cli.source(), output)?;
            image::check_output(output, cli.force)?;
        }
        None => nbd::check_options(&serve_options(cli))?,
    }
    // Values past what the filesystem holds are refused before anything is read or written.
    let opts = options(cli)?;
    mkfs::limits::check(&opts)?;
    let epoch = identity::source_date_epoch()?;
    raise_fd_limit();
    let exclude = cli.output.as_deref().and_then(source::identity);

    let progress = Progress::new(Mode::for_stderr(cli.quiet, cli.verbose), cli.verbose);
    progress.start_scan("scanning");
    let tree = read_source(cli, exclude, &mut || progress.inc_entries(1))?;
    progress.finish();
    say(&format!(
        "{}: {} entries, {} of file data",
        cli.source().display(),
        tree.entries,
        ByteSize(tree.data_bytes)
    ));

    let efi = efi_options(cli)?;
    let ids = match epoch {
        Some(t) => {
            let norm = Normalise {
                owner: opts.owner,
                clamp_time: t,
            };
            let mut h = blake3::Hasher::new();
            h.update(&source::digest::digest(&tree, norm)?);
            h.update(canonical_options(cli, &opts, efi.as_ref()).as_bytes());
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
        part_name: cli.part_label(),
    };
    // --efi: the EFI system partition is planned first; its size fixes where the filesystem goes.
    let esp = match &efi {
        Some(efi) => {
            let esp_ids = EspIds {
                root_partuuid: guids.partition,
                volume_id: ids.esp_volume_id,
                now: opts.time as i64,
                clamp: epoch,
            };
            let esp = esp::plan(&tree, efi, esp_ids)?;
            say(&esp.describe(&tree));
            Some(esp)
        }
        None => None,
    };
    let esp_entry = gpt::Entry {
        part_type: gpt::ESP_TYPE,
        guid: ids.esp_partition,
        name: gpt::ESP_NAME.to_string(),
    };
    // The disk around a filesystem of `size` bytes at `offset` in `fs`, and with --efi the ESP
    // read from `esp_source`.
    let make_disk = |fs: Arc<std::fs::File>, offset: u64, size: u64, esp_source: Source| match (
        cli.partition,
        &esp,
    ) {
        (PartitionMode::None, _) => Disk::bare(fs, size),
        (PartitionMode::Gpt, None) => Disk::partitioned_at(fs, offset, size, &guids),
        (PartitionMode::Gpt, Some(esp)) => {
            let esp = Part {
                entry: esp_entry.clone(),
                len: esp.size(),
                source: esp_source,
            };
            let root = Part {
                entry: guids.entry(),
                len: size,
                source: Source::File { file: fs, offset },
            };
            Disk::gpt(guids.disk, vec![esp, root], 1)
        }
    };
    // In a dry run, identifiers that a real run would draw at random are unknown.
    let known = |given: bool| epoch.is_some() || given || !cli.dry_run;
    let facts = |disk: &Disk, built: &mkfs::Built, destination: Destination| Facts {
        destination,
        disk_size: disk.size(),
        partition_offset: disk.partition_offset(),
        partition_size: disk.partition_size(),
        gpt: (cli.partition == PartitionMode::Gpt).then(|| report::Gpt {
            disk_guid: known(cli.disk_guid.is_some()).then_some(guids.disk),
            partition_guid: known(cli.part_guid.is_some()).then_some(guids.partition),
            partition_type: guids.part_type,
            partition_name: guids.part_name.clone(),
        }),
        esp: esp.as_ref().map(|e| (PARTITION_START, e.size())),
        fs_type: cli.fs_type().name(),
        fs: built.report.clone(),
        uuid: known(cli.uuid.is_some()).then(|| uuid::Uuid::from_bytes(built.report.uuid)),
        entries: tree.entries,
        file_bytes: tree.data_bytes,
        elapsed_seconds: started.elapsed().as_secs_f64(),
    };
    let output = match (&cli.output, cli.dry_run) {
        (Some(output), false) => output,
        (output, dry_run) => {
            // Serving or a dry run: build in an unlinked temp file in TMPDIR (a dry run copies
            // no file data: --lazy's metadata is the same).
            let tmp = cleanup::temp_dir();
            let file = Arc::new(
                tempfile::tempfile_in(&tmp)
                    .with_context(|| format!("{}: creating a temporary file", tmp.display()))?,
            );
            let _open = cleanup::hand_over_on_signal(&file);
            let name = format!("a temporary file in {}", tmp.display());
            let target = Target {
                file: &file,
                offset: 0,
                name: &name,
            };
            let lazy = cli.serving.lazy || dry_run;
            let opts = Options { lazy, ..opts };
            let built = mkfs::build(cli.source(), &tree, &opts, &target, &progress, &say)?;
            say(&built.report.to_string());
            if !lazy {
                say(&data_report(&built.data));
            }
            // The ESP: after the filesystem in the same temp file, or (lazily) read from SOURCE.
            let esp_at = built.size.div_ceil(1 << 20) << 20;
            let mut parts = Vec::new();
            let esp_source = match &esp {
                Some(e) if lazy => {
                    parts = e.lazy_parts(&tree, PARTITION_START)?;
                    Source::Zero
                }
                Some(e) => {
                    e.write(&tree, &file, esp_at, &name)?;
                    Source::File {
                        file: file.clone(),
                        offset: esp_at,
                    }
                }
                None => Source::Zero,
            };
            let disk = make_disk(file.clone(), 0, built.size, esp_source);
            if let (Some(output), true) = (output, dry_run) {
                let f = facts(&disk, &built, Destination::DryRun(output.clone()));
                f.print(cli.json, cli.quiet)?;
                return Ok(0);
            }
            let mut served = facts(&disk, &built, Destination::Served(String::new()));
            let announce = |uri: &str| {
                served.destination = Destination::Served(uri.to_string());
                served.elapsed_seconds = started.elapsed().as_secs_f64();
                // The URI is on stderr already (unless --run or -q): the rest only with -v.
                served.print(cli.json, cli.quiet || !cli.verbose)
            };
            let at = disk.partition_offset();
            parts.extend(
                built
                    .lazy
                    .into_iter()
                    .map(|p| (at + p.at, p.len, p.data.into())),
            );
            return serve(cli, disk.overlay(parts), announce);
        }
    };
    // Writing: build the filesystem in place in OUTPUT's temp file, at the partition offset, so
    // file data is copied once; then the ESP (with --efi) before it; only the partition table is
    // left to write.
    let mut out = image::Output::create(output, cli.force, readers(cli, &tree, &say))?;
    let file = out.file().clone();
    let offset = match (cli.partition, &esp) {
        (PartitionMode::Gpt, None) => PARTITION_START,
        (PartitionMode::Gpt, Some(esp)) => gpt::place(&[esp.size(), 1])[1].offset,
        (PartitionMode::None, _) => 0,
    };
    let name = output.display().to_string();
    let target = Target {
        file: &file,
        offset,
        name: &name,
    };
    let built = mkfs::build(cli.source(), &tree, &opts, &target, &progress, &say)?;
    say(&built.report.to_string());
    say(&data_report(&built.data));
    if let Some(esp) = &esp {
        esp.write(&tree, &file, PARTITION_START, &name)?;
    }
    let esp_source = Source::File {
        file: file.clone(),
        offset: PARTITION_START,
    };
    let disk = make_disk(file, offset, built.size, esp_source);
    progress.start_copy("writing", disk.size(), 0);
    out.write(&disk, &mut |n| progress.inc_bytes(n))?;
    progress.start_wait("syncing");
    out.commit()?;
    progress.finish();
    facts(&disk, &built, Destination::File(output.clone())).print(cli.json, cli.quiet)?;
    Ok(0)
}

/// The -v line saying which way the file data went into the filesystem, with byte counts.
fn data_report(s: &CopyStats) -> String {
    format!(
        "file data: {} bytes cloned, {} copied in kernel, {} copied",
        s.cloned, s.in_kernel, s.copied
    )
}

/// Who may read OUTPUT: its owner only when the tree, or one of the inputs it was read from
/// (SOURCE, each `--add`), holds what others may not read; `say` tells why.
fn readers(cli: &Cli, tree: &source::Tree, say: &dyn Fn(&str)) -> image::Readers {
    let src = cli.source();
    let name = src.as_os_str().as_encoded_bytes();
    let adds = cli.adds();
    let inputs = std::iter::once(src).chain(adds.iter().map(|(p, _)| p.as_path()));
    let secret = source::secret::first_secret(&tree.root, name)
        .or_else(|| {
            inputs
                .zip(&tree.origins)
                .find_map(|(path, origin)| source::secret::input_secret(path, origin))
        })
        .or_else(|| tree.unreadable.clone());
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

/// Reads SOURCE (a directory, `-` for a tar stream on stdin, a tar archive or a container
/// image, told by its contents), then merges each `--add` source into it, in order.
fn read_source(
    cli: &Cli,
    exclude: Option<(u64, u64)>,
    on_entry: &mut dyn FnMut(),
) -> Result<source::Tree> {
    use std::io::IsTerminal;
    let adds = cli.adds();
    let stdin = std::iter::once(cli.source()).chain(adds.iter().map(|(p, _)| p.as_path()));
    if stdin.into_iter().any(|p| p.as_os_str() == "-") && std::io::stdin().is_terminal() {
        anyhow::bail!("- (a tar stream on stdin) was given, but stdin is a terminal");
    }
    let opts = ReadOptions {
        scan: source::ScanOptions {
            exclude,
            skip_unreadable: cli.skip_unreadable,
            one_file_system: cli.one_file_system,
            sparse: cli.sparse.then_some(cli.block_size),
        },
        image: ImageOptions {
            tmpdir: cleanup::temp_dir(),
            tar: source::tar::Options {
                block: cli.block_size,
            },
            platform: cli.platform(),
        },
    };
    let mut tree = input::read_source(cli.source(), &opts, on_entry)?;
    if adds.is_empty() {
        return Ok(tree);
    }
    for (src, place) in adds {
        let more = input::read_add(&src, &opts, on_entry)?;
        source::compose::add(&mut tree, more, &place)
            .with_context(|| format!("--add {}", src.display()))?;
    }
    source::compose::recount(&mut tree);
    Ok(tree)
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

/// `--efi`'s options from the command line, `--efi-loader`'s file read.
fn efi_options(cli: &Cli) -> Result<Option<EfiOptions>> {
    if !cli.efi.efi {
        return Ok(None);
    }
    Ok(Some(EfiOptions {
        loader: cli
            .efi
            .efi_loader
            .as_deref()
            .map(boot_files::read_host_loader)
            .transpose()?,
        kernel: cli.efi.kernel.clone(),
        initrd: cli.efi.initrd.clone(),
        cmdline: cli.efi.cmdline.clone(),
    }))
}

/// Everything about the options that shapes the image, for reproducible identifiers.
fn canonical_options(cli: &Cli, o: &Options, efi: Option<&EfiOptions>) -> String {
    let efi = efi.map_or(String::new(), |e| {
        let loader = match &e.loader {
            Some(Loader::Host { bytes, .. }) => blake3::hash(bytes).to_hex().to_string(),
            _ => "tree".to_string(),
        };
        format!(
            " efi loader={loader} kernel={:?} initrd={:?} cmdline={:?}",
            e.kernel, e.initrd, e.cmdline
        )
    });
    let opts = format!(
        "type={} features={:?} bs={} isize={} N={:?} size={:?} label={:?} m={} owner={:?} partition={:?} ptype={} pname={:?} sparse={}",
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
        cli.part_label(),
        cli.sparse
    );
    opts + &efi
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
        tls: cli.tls_options(),
        max_connections: cli.serving.max_connections as usize,
        release_temp_files: true,
    }
}

/// `--serve`: the same disk over NBD, read-only or under a copy-on-write overlay; `announce(uri)`
/// once listening.
fn serve(cli: &Cli, disk: Disk, mut announce: impl FnMut(&str) -> Result<()>) -> Result<i32> {
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
    nbd::serve_announcing(export, &opts, &mut announce)
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
