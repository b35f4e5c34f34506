//! The main job, start to end, from parsed options: check OUTPUT, scan SOURCE, make the
//! filesystem, lay out the disk, write the image. Errors come back with their context.

use std::sync::Arc;

use anyhow::{Context, Result};

use crate::cli::{Cli, PartitionMode};
use crate::disk::{gpt::Guids, Disk};
use crate::mkfs::{self, size::Human, Options};
use crate::progress::Progress;
use crate::{cleanup, image, source};

/// mke2fs's default share of blocks reserved for root.
const RESERVED_PERCENT: u32 = 5;

pub fn run(cli: &Cli) -> Result<()> {
    let say = |msg: &str| {
        if cli.verbose {
            eprintln!("linuxdisk-mk: {msg}");
        }
    };
    cleanup::install_signal_handlers()?;
    image::check_output(&cli.output, cli.force)?;
    raise_fd_limit();
    let exclude = source::identity(&cli.output);

    let progress = Progress::new(!cli.quiet);
    progress.start_entries("scanning", None);
    let scanned = source::scan(&cli.source, exclude, &mut || progress.inc_entries(1));
    progress.finish();
    let tree = scanned?;
    say(&format!(
        "{}: {} entries, {} of file data",
        cli.source.display(),
        tree.entries,
        Human(tree.data_bytes)
    ));

    let mut label = [0u8; 16];
    if let Some(l) = &cli.label {
        label[..l.len()].copy_from_slice(l.as_bytes());
    }
    let opts = Options {
        fstype: cli.fstype,
        block_size: cli.block_size,
        size: cli.size.unwrap_or_default(),
        label,
        reserved_percent: RESERVED_PERCENT,
    };
    let built = mkfs::build(&cli.source, &tree, &opts, &progress, &say)?;
    say(&built.report.to_string());

    let fs = Arc::new(built.file);
    let disk = match cli.partition {
        PartitionMode::Gpt => Disk::partitioned(fs, built.size, &Guids::random()),
        PartitionMode::None => Disk::bare(fs, built.size),
    };
    progress.start_bytes("writing", disk.size());
    let written = image::write_image(&disk, &cli.output, cli.force, &mut |n| {
        progress.inc_position(n)
    });
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
            cli.output.display(),
            Human(disk.size()),
            cli.fstype.name(),
            Human(built.size)
        );
    }
    Ok(())
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
