//! The command line: its definition (`args`, with the value parsers of `values`), the checks
//! across options that clap cannot express, and the conversions from what was typed to the
//! typed values the stages take. `--generate` prints the man page and completions that
//! `build.rs` made from the same definition (`generated`). Habits from mke2fs and cp that mean
//! something else here get a hint naming our option (`habits`); `--version` names the libext2fs
//! in use.

mod args;
pub mod generated;
mod habits;
mod values;

pub use args::{Cli, EfiArgs, FsTypeArg, Generate, PartitionMode, ServeArgs, TlsArg};
pub use values::{parse_bytes, SizeArg};

use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches};

use crate::disk::part_types;
use crate::mkfs::fstype::{Features, FsType};
use crate::mkfs::size::SizeSpec;
use crate::nbd::tls::{Credentials, TlsMode, TlsOptions};
use crate::source::compose::Placement;
use crate::source::oci::Platform;

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
        let mut cmd = Cli::command().version(version());
        let matches = cmd
            .try_get_matches_from_mut(args)
            .map_err(habits::with_hint)?;
        needs_serve(&cmd, &matches)?;
        needs_flag(
            &cmd,
            &matches,
            EfiArgs::augment_args(clap::Command::new("efi")),
            "efi",
        )?;
        let mut cli = Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))?;
        if cli.efi.efi && matches.value_source("part_type") == Some(ValueSource::DefaultValue) {
            cli.part_type = "root-x86-64".to_string();
        }
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

    /// Partition 1's name: `--part-label`, else the partition type's name (its GUID when it has
    /// none), as systemd-repart names partitions.
    pub fn part_label(&self) -> String {
        if let Some(l) = &self.part_label {
            return l.clone();
        }
        let t = self.part_type();
        part_types::PART_TYPES
            .iter()
            .find(|(_, g)| *g == t)
            .map_or_else(|| t.to_string(), |(n, _)| n.to_string())
    }

    /// The `--add` sources in order: SRC and where it goes (checked by [`Cli::check`]).
    pub fn adds(&self) -> Vec<(PathBuf, Placement)> {
        self.add
            .iter()
            .map(|a| {
                let (src, dest) = values::split_add(a);
                let place = dest.map_or_else(Placement::root, |d| {
                    Placement::parse(&d).expect("--add was checked")
                });
                (PathBuf::from(src), place)
            })
            .collect()
    }

    /// `--platform`, else this machine's.
    pub fn platform(&self) -> Platform {
        match &self.platform {
            Some(p) => Platform::parse(p).expect("--platform was checked"),
            None => Platform::host(),
        }
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

    /// The TLS options: `--tls` defaults to require when keys are given, otherwise off
    /// (checked by [`Cli::check`]).
    pub fn tls_options(&self) -> TlsOptions {
        let s = &self.serving;
        let credentials = match (&s.tls_certificates, &s.tls_psk) {
            (Some(dir), _) => Some(Credentials::X509 {
                dir: dir.clone(),
                verify_peer: s.tls_verify_peer,
            }),
            (None, Some(file)) => Some(Credentials::Psk(file.clone())),
            (None, None) => None,
        };
        let mode = match (s.tls, &credentials) {
            (Some(TlsArg::Off), _) | (None, None) => TlsMode::Off,
            (Some(TlsArg::On), _) => TlsMode::On,
            (Some(TlsArg::Require), _) | (None, Some(_)) => TlsMode::Require,
        };
        TlsOptions { mode, credentials }
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
        if self.efi.efi && self.partition == PartitionMode::None {
            return Err(invalid(
                "--efi needs a partition table: it cannot go with --partition none".to_string(),
            ));
        }
        if let Some(c) = &self.efi.cmdline {
            if c.chars().any(char::is_control) {
                return Err(invalid(
                    "--cmdline: a kernel command line is one line, without control characters"
                        .to_string(),
                ));
            }
        }
        let mut stdin = usize::from(self.source().as_os_str() == "-");
        for a in &self.add {
            let (src, dest) = values::split_add(a);
            if src.is_empty() {
                return Err(invalid(format!("--add {}: no SRC", a.to_string_lossy())));
            }
            if let Some(Err(e)) = dest.map(|d| Placement::parse(&d)) {
                return Err(invalid(format!("--add {}: {e}", a.to_string_lossy())));
            }
            stdin += usize::from(src == "-");
        }
        if stdin > 1 {
            return Err(invalid(
                "standard input (-) can be read only once: as SOURCE or one --add".to_string(),
            ));
        }
        if let Some(p) = &self.platform {
            if let Err(e) = Platform::parse(p) {
                return Err(invalid(format!("--platform: {e}")));
            }
        }
        let s = &self.serving;
        let keys = s.tls_certificates.is_some() || s.tls_psk.is_some();
        match s.tls {
            Some(TlsArg::On | TlsArg::Require) if !keys => {
                return Err(invalid(
                    "--tls=on and --tls=require need --tls-certificates DIR or --tls-psk FILE"
                        .into(),
                ))
            }
            Some(TlsArg::Off) if keys => {
                return Err(invalid(
                    "--tls=off: the keys of --tls-certificates or --tls-psk would not be used"
                        .into(),
                ))
            }
            _ => {}
        }
        if s.tls_verify_peer && s.tls_certificates.is_none() {
            return Err(invalid(
                "--tls-verify-peer checks client certificates: it needs --tls-certificates DIR"
                    .into(),
            ));
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

/// What `--version` prints after the name: the package version and the libext2fs loaded.
fn version() -> &'static str {
    let lib = ext2fs::library_version();
    let text = format!(
        "{} (libext2fs {}, {})",
        env!("CARGO_PKG_VERSION"),
        lib.version,
        lib.date
    );
    // Once per process, for clap's &'static str.
    Box::leak(text.into_boxed_str())
}

/// A usage error when an option of `group` (the options of [`ServeArgs`] or [`EfiArgs`]) was
/// typed without `--flag`.
fn needs_flag(
    cmd: &clap::Command,
    matches: &ArgMatches,
    group: clap::Command,
    flag: &str,
) -> Result<(), clap::Error> {
    if matches.get_flag(flag) {
        return Ok(());
    }
    for arg in group.get_arguments() {
        let id = arg.get_id().as_str();
        if id != flag && matches.value_source(id) == Some(ValueSource::CommandLine) {
            let name = arg
                .get_long()
                .map_or_else(|| id.to_string(), |l| format!("--{l}"));
            return Err(cmd.clone().error(
                clap::error::ErrorKind::MissingRequiredArgument,
                format!("{name} needs --{flag}"),
            ));
        }
    }
    Ok(())
}

/// A usage error when an option of [`ServeArgs`] was typed without `--serve`.
fn needs_serve(cmd: &clap::Command, matches: &ArgMatches) -> Result<(), clap::Error> {
    let serving = ServeArgs::augment_args(clap::Command::new("serving"));
    needs_flag(cmd, matches, serving, "serve")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_follow_nbdkit_linuxdisk() {
        let c = Cli::parse_from_args(["linuxdisk-mk", "dir", "out.img"]).unwrap();
        assert_eq!(c.fs_type(), FsType::Ext2);
        assert_eq!(c.block_size, 4096);
        assert_eq!(c.partition, PartitionMode::Gpt);
        assert_eq!(c.size_spec(), SizeSpec::Auto);
        assert!(!c.serving.serve);
        assert_eq!(c.part_label(), "linux");
        assert!(c.adds().is_empty() && !c.sparse);
    }

    #[test]
    fn add_splits_at_the_last_colon_slash() {
        let c = Cli::parse_from_args([
            "linuxdisk-mk",
            "--add",
            "overlay",
            "--add",
            "my:dir:/opt/a:b",
            "--add",
            "a:/b:/",
            "--add",
            "motd:/etc/",
            "d",
            "o",
        ])
        .unwrap();
        let got: Vec<(String, Vec<Vec<u8>>, bool)> = c
            .adds()
            .into_iter()
            .map(|(p, pl)| (p.display().to_string(), pl.comps, pl.into))
            .collect();
        let v = |s: &[&str]| s.iter().map(|c| c.as_bytes().to_vec()).collect::<Vec<_>>();
        assert_eq!(
            got,
            [
                ("overlay".to_string(), v(&[]), true),
                ("my:dir".to_string(), v(&["opt", "a:b"]), false),
                ("a:/b".to_string(), v(&[]), true),
                ("motd".to_string(), v(&["etc"]), true),
            ]
        );
        for bad in [
            &["--add", ":/x"][..],
            &["--add", "a:/../b"],
            &["--add", "-", "-"],
        ] {
            let mut args = vec!["linuxdisk-mk"];
            args.extend_from_slice(bad);
            if args.len() == 3 {
                args.push("d");
            }
            args.push("o");
            assert!(Cli::parse_from_args(&args).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn part_label_defaults_to_the_type_name() {
        let c =
            Cli::parse_from_args(["linuxdisk-mk", "--part-type", "root-x86-64", "d", "o"]).unwrap();
        assert_eq!(c.part_label(), "root-x86-64");
        let c = Cli::parse_from_args([
            "linuxdisk-mk",
            "--part-type",
            "root-x86-64",
            "--part-label",
            "mine",
            "d",
            "o",
        ])
        .unwrap();
        assert_eq!(c.part_label(), "mine");
        let g = "0fc63daf-8483-4772-8e79-3d69d8477de5";
        let c = Cli::parse_from_args(["linuxdisk-mk", "--part-type", g, "d", "o"]).unwrap();
        assert_eq!(c.part_label(), g);
        assert!(Cli::parse_from_args(["linuxdisk-mk", "--platform", "linux", "d", "o"]).is_err());
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
            &["--tls", "require"],
            &["--tls-psk", "/tmp/k"],
            &["--tls-certificates", "/tmp/d"],
            &["--tls-verify-peer"],
            &["--max-connections", "4"],
        ] {
            let mut args = vec!["linuxdisk-mk"];
            args.extend_from_slice(extra);
            args.extend_from_slice(&["dir", "out.img"]);
            let e = Cli::parse_from_args(&args).expect_err(&format!("{extra:?} without --serve"));
            assert!(e.to_string().contains("--serve"), "{extra:?}: {e}");
        }
    }

    #[test]
    fn efi_options_need_efi_and_make_the_root_type_root_x86_64() {
        for extra in [
            &["--efi-loader", "/x"][..],
            &["--kernel", "/boot/vmlinuz"],
            &["--initrd", "/boot/initrd.img"],
            &["--cmdline", "quiet"],
        ] {
            let mut args = vec!["linuxdisk-mk"];
            args.extend_from_slice(extra);
            args.extend_from_slice(&["dir", "out.img"]);
            let e = Cli::parse_from_args(&args).expect_err(&format!("{extra:?} without --efi"));
            assert!(e.to_string().contains("needs --efi"), "{extra:?}: {e}");
        }
        let c = Cli::parse_from_args(["linuxdisk-mk", "--efi", "d", "o"]).unwrap();
        assert_eq!(c.part_type(), part_types::parse("root-x86-64").unwrap());
        let c = Cli::parse_from_args(["linuxdisk-mk", "--efi", "--part-type", "linux", "d", "o"])
            .unwrap();
        assert_eq!(c.part_type(), part_types::parse("linux").unwrap());
        let c = Cli::parse_from_args(["linuxdisk-mk", "d", "o"]).unwrap();
        assert_eq!(c.part_type(), part_types::parse("linux").unwrap());
        assert!(
            Cli::parse_from_args(["linuxdisk-mk", "--efi", "--partition", "none", "d", "o"])
                .is_err()
        );
        assert!(
            Cli::parse_from_args(["linuxdisk-mk", "--efi", "--cmdline", "a b", "d", "o"]).is_ok()
        );
        assert!(
            Cli::parse_from_args(["linuxdisk-mk", "--efi", "--cmdline", "a\nb", "d", "o"]).is_err()
        );
    }

    #[test]
    fn mke2fs_letters_for_block_size_and_uuid_work() {
        let c = Cli::parse_from_args([
            "linuxdisk-mk",
            "-b",
            "1024",
            "-U",
            "0b0d5b7a-6c4f-4a54-9c33-3f5f0f5e1c01",
            "d",
            "o",
        ])
        .unwrap();
        assert_eq!(c.block_size, 1024);
        assert_eq!(
            c.uuid.unwrap().to_string(),
            "0b0d5b7a-6c4f-4a54-9c33-3f5f0f5e1c01"
        );
    }

    #[test]
    fn dry_run_is_not_for_serving() {
        assert!(Cli::parse_from_args(["linuxdisk-mk", "-n", "d", "o"]).is_ok_and(|c| c.dry_run));
        assert!(Cli::parse_from_args(["linuxdisk-mk", "--dry-run", "--serve", "d"]).is_err());
    }

    #[test]
    fn tls_defaults_to_require_with_keys_and_checks_its_partners() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["linuxdisk-mk", "--serve"];
            args.extend_from_slice(extra);
            args.push("dir");
            Cli::parse_from_args(&args)
        };
        let tls = |extra: &[&str]| parse(extra).unwrap().tls_options();
        assert_eq!(tls(&[]), TlsOptions::default());
        let psk = tls(&["--tls-psk", "k.psk"]);
        assert_eq!(psk.mode, TlsMode::Require);
        assert_eq!(psk.credentials, Some(Credentials::Psk("k.psk".into())));
        let x509 = tls(&["--tls=on", "--tls-certificates", "d", "--tls-verify-peer"]);
        assert_eq!(x509.mode, TlsMode::On);
        let want = Credentials::X509 {
            dir: "d".into(),
            verify_peer: true,
        };
        assert_eq!(x509.credentials, Some(want));
        for (bad, why) in [
            (&["--tls=require"][..], "need --tls-certificates"),
            (&["--tls=on"], "need --tls-certificates"),
            (&["--tls=off", "--tls-psk", "k"], "would not be used"),
            (
                &["--tls-verify-peer", "--tls-psk", "k"],
                "needs --tls-certificates",
            ),
            (
                &["--tls-psk", "k", "--tls-certificates", "d"],
                "cannot be used with",
            ),
            (&["--max-connections", "0"], "0"),
        ] {
            let e = parse(bad).expect_err(&format!("{bad:?}")).to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        assert_eq!(parse(&[]).unwrap().serving.max_connections, 1024);
    }

    #[test]
    fn generate_needs_nothing_else() {
        let c = Cli::parse_from_args(["linuxdisk-mk", "--generate", "man"]).unwrap();
        assert_eq!(c.generate, Some(Generate::Man));
        assert!(Cli::parse_from_args(["linuxdisk-mk", "--generate", "man", "d", "o"]).is_err());
        assert!(Cli::parse_from_args(["linuxdisk-mk", "--generate", "pdf"]).is_err());
    }
}
