//! The command line: its definition (`args`, with the value parsers of `values`), the checks
//! across options that clap cannot express, and the conversions from what was typed to the
//! typed values the stages take. `--generate` prints the man page and completions that
//! `build.rs` made from the same definition (`generated`).

mod args;
pub mod generated;
mod values;

pub use args::{Cli, FsTypeArg, Generate, PartitionMode, ServeArgs};
pub use values::{parse_bytes, SizeArg};

use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches};

use crate::disk::part_types;
use crate::mkfs::fstype::{Features, FsType};
use crate::mkfs::size::SizeSpec;

impl Cli {
    /// Parses the command line; usage errors (exit 2) include values only checkable together.
    pub fn parse_args() -> Cli {
        Cli::parse_from_args(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// Parses `args` (the program name first) and checks them: clap's parse, then that every
    /// serving option came with `--serve`, then [`Cli::check`].
    pub fn parse_from_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut cmd = Cli::command();
        let matches = cmd.try_get_matches_from_mut(args)?;
        needs_serve(&cmd, &matches)?;
        let cli = Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))?;
        cli.check()?;
        Ok(cli)
    }

    /// SOURCE (present unless `--generate` was given, which clap makes exclusive).
    pub fn source(&self) -> &Path {
        self.source.as_deref().unwrap_or(Path::new("-"))
    }

    /// The filesystem type.
    pub fn fs_type(&self) -> FsType {
        match self.fstype {
            FsTypeArg::Ext2 => FsType::Ext2,
            FsTypeArg::Ext3 => FsType::Ext3,
            FsTypeArg::Ext4 => FsType::Ext4,
        }
    }

    /// How the filesystem's size is chosen.
    pub fn size_spec(&self) -> SizeSpec {
        match self.size {
            None => SizeSpec::Auto,
            Some(SizeArg::Total(n)) => SizeSpec::Total(n),
            Some(SizeArg::Free(n)) => SizeSpec::Free(n),
        }
    }

    /// Partition 1's type GUID (checked by [`Cli::check`]).
    pub fn part_type(&self) -> uuid::Uuid {
        part_types::parse(&self.part_type).expect("--part-type was checked")
    }

    /// The filesystem features: the type's defaults with the -O edits applied.
    pub fn features(&self) -> Result<Features, String> {
        let mut f = self.fs_type().features();
        if self.inode_size == 128 {
            // No room for the extra fields: like mke2fs, don't claim them.
            f = f.edit("^extra_isize")?;
        }
        match &self.features {
            Some(list) => f.edit(list),
            None => Ok(f),
        }
    }

    /// Rules across options that clap's definitions cannot express.
    pub fn check(&self) -> Result<(), clap::Error> {
        let invalid = |msg: String| Cli::command().error(clap::error::ErrorKind::InvalidValue, msg);
        if let Err(e) = self.features() {
            return Err(invalid(format!("-O: {e}")));
        }
        if let Err(e) = part_types::parse(&self.part_type) {
            return Err(invalid(format!("--part-type: {e}")));
        }
        // The nil GUID identifies nothing (part_types refuses it as a type: an unused entry).
        let ids = [
            ("--uuid", self.uuid),
            ("--disk-guid", self.disk_guid),
            ("--part-guid", self.part_guid),
        ];
        if let Some((opt, _)) = ids.iter().find(|(_, g)| g.is_some_and(|g| g.is_nil())) {
            return Err(invalid(format!(
                "{opt}: the nil GUID (all zeros) identifies nothing"
            )));
        }
        if self.inode_size as u32 > self.block_size {
            return Err(invalid(format!(
                "--inode-size {} is larger than the block size {}",
                self.inode_size, self.block_size
            )));
        }
        Ok(())
    }
}

/// A usage error when an option of [`ServeArgs`] was typed without `--serve`.
fn needs_serve(cmd: &clap::Command, matches: &ArgMatches) -> Result<(), clap::Error> {
    if matches.get_flag("serve") {
        return Ok(());
    }
    let serving = ServeArgs::augment_args(clap::Command::new("serving"));
    for arg in serving.get_arguments() {
        let id = arg.get_id().as_str();
        if id != "serve" && matches.value_source(id) == Some(ValueSource::CommandLine) {
            let name = arg
                .get_long()
                .map_or_else(|| id.to_string(), |l| format!("--{l}"));
            return Err(cmd.clone().error(
                clap::error::ErrorKind::MissingRequiredArgument,
                format!("{name} needs --serve"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_follow_the_seed() {
        let c = Cli::parse_from_args(["linuxdisk-mk", "dir", "out.img"]).unwrap();
        assert_eq!(c.fs_type(), FsType::Ext2);
        assert_eq!(c.block_size, 4096);
        assert_eq!(c.partition, PartitionMode::Gpt);
        assert_eq!(c.size_spec(), SizeSpec::Auto);
        assert!(!c.serving.serve);
    }

    #[test]
    fn mke2fs_knobs_parse() {
        let c = Cli::parse_from_args([
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
        assert!(!c.features().unwrap().has_metadata_csum());
        assert_eq!(
            (c.inodes, c.reserved_percent, c.inode_size, c.owner),
            (Some(5000), 0.5, 512, Some((0, 0)))
        );
        assert_eq!(
            c.part_type().to_string().to_uppercase(),
            "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
        );
        assert!(Cli::parse_from_args(["linuxdisk-mk", "-O", "nonsense", "d", "o"]).is_err());
        assert!(Cli::parse_from_args(["linuxdisk-mk", "--owner", "root", "d", "o"]).is_err());
        assert!(Cli::parse_from_args(["linuxdisk-mk", "-I", "100", "d", "o"]).is_err());
        assert!(Cli::parse_from_args(["linuxdisk-mk", "--part-type", "nope", "d", "o"]).is_err());
        let nil = "00000000-0000-0000-0000-000000000000";
        for opt in ["--uuid", "--disk-guid", "--part-guid", "--part-type"] {
            let e = Cli::parse_from_args(["linuxdisk-mk", opt, nil, "d", "o"]).unwrap_err();
            let e = e.to_string();
            assert!(e.contains("nil GUID") || e.contains("unused"), "{opt}: {e}");
        }
        let e = Cli::parse_from_args(["linuxdisk-mk", "--owner", "4294967295:0", "d", "o"]);
        assert!(e.unwrap_err().to_string().contains("(uid_t)-1"));
    }

    #[test]
    fn serving_takes_no_output() {
        let c =
            Cli::parse_from_args(["linuxdisk-mk", "--serve", "--socket", "/tmp/s", "dir"]).unwrap();
        assert!(c.serving.serve && c.output.is_none());
        assert!(Cli::parse_from_args(["linuxdisk-mk", "--serve", "dir", "out.img"]).is_err());
        assert!(Cli::parse_from_args(["linuxdisk-mk", "dir"]).is_err());
    }

    #[test]
    fn serving_options_need_serve() {
        for extra in [
            &["--cow"][..],
            &["--lazy"],
            &["--socket", "/tmp/s"],
            &["--tcp", "10809"],
            &["--run", "true"],
            &["--export-name", "x"],
            &["--pidfile", "/tmp/p"],
        ] {
            let mut args = vec!["linuxdisk-mk"];
            args.extend_from_slice(extra);
            args.extend_from_slice(&["dir", "out.img"]);
            let e = Cli::parse_from_args(&args).expect_err(&format!("{extra:?} without --serve"));
            assert!(e.to_string().contains("--serve"), "{extra:?}: {e}");
        }
    }

    #[test]
    fn generate_needs_nothing_else() {
        let c = Cli::parse_from_args(["linuxdisk-mk", "--generate", "man"]).unwrap();
        assert_eq!(c.generate, Some(Generate::Man));
        assert!(Cli::parse_from_args(["linuxdisk-mk", "--generate", "man", "d", "o"]).is_err());
        assert!(Cli::parse_from_args(["linuxdisk-mk", "--generate", "pdf"]).is_err());
    }
}
