//! linuxdisk-mk: turn a directory or a tar archive into a disk image holding one GPT partition
//! with an ext2, ext3 or ext4 filesystem built through libext2fs, written to a file or served
//! over NBD.
//!
//! The data flow is the module list, top to bottom; no module imports one above it in the flow:
//! `source` (scan a directory or read a tar into a tree) → `mkfs` (plan: count and size; format:
//! an empty filesystem in a sparse file; populate: inodes, directories, data) → `disk` (GPT +
//! filesystem as an ordered list of regions) → `image` (write the regions to OUTPUT) or `nbd`
//! (serve them). Below the stages, what they share; at the bottom, the driver: `cli` (the
//! command line), `run` (the job from start to end) and `report` (what was made: the summary
//! and `--json`).
//!
//! libext2fs is reached only through the `ext2fs` workspace crate (the safe wrapper, which holds
//! all the unsafe code); this crate has none.
#![forbid(unsafe_code)]

// The stages, in data-flow order.
pub mod source;
pub mod mkfs;
pub mod disk;
pub mod image;
pub mod nbd;

// What the stages share.
pub mod cleanup;
pub mod copy;
pub mod identity;
pub mod progress;
pub mod sparse;
pub mod sync;
#[cfg(test)]
pub(crate) mod testing;

// The driver.
pub mod cli;
pub mod report;
pub mod run;
