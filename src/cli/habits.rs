//! Options people type out of habit from mke2fs, cp and other tools, which linuxdisk-mk does
//! not have: clap's "unexpected argument" error gets a tip naming what to use here instead of
//! clap's own ("to pass '-F' as a value, use '-- -F'"), which would not help.

use clap::builder::StyledStr;
use clap::error::{ContextKind, ContextValue, ErrorKind};

/// Unknown options and what to say about each.
const HABITS: &[(&str, &str)] = &[
    (
        "-F",
        "-F is mke2fs's \"force\"; here -f (--force) lets OUTPUT be replaced",
    ),
    (
        "-d",
        "-d is mke2fs's root directory; here the directory is the first argument: \
         linuxdisk-mk [OPTIONS] SOURCE OUTPUT",
    ),
    (
        "-s",
        "the filesystem's size is --size SIZE (or --size +SIZE for free space); sparse \
         superblocks (mke2fs -s) are always on",
    ),
    (
        "-o",
        "OUTPUT is the last argument, not an option: linuxdisk-mk [OPTIONS] SOURCE OUTPUT",
    ),
    (
        "--output",
        "OUTPUT is the last argument, not an option: linuxdisk-mk [OPTIONS] SOURCE OUTPUT",
    ),
    (
        "-j",
        "-j is mke2fs's journal; here -t ext3 or -t ext4 makes a journalled filesystem",
    ),
    (
        "-i",
        "-i is mke2fs's bytes per inode; here -N COUNT sets the inode count (by default \
         the tree's entries plus 10%)",
    ),
    (
        "-T",
        "-T is mke2fs's usage type; here -N, -I and --block-size set what it would",
    ),
    (
        "-r",
        "SOURCE is always copied whole, recursively, with owners, modes, times, links and \
         extended attributes: no -r, -R or -a is needed",
    ),
    (
        "-R",
        "SOURCE is always copied whole, recursively, with owners, modes, times, links and \
         extended attributes: no -r, -R or -a is needed",
    ),
    (
        "-a",
        "SOURCE is always copied whole, recursively, with owners, modes, times, links and \
         extended attributes: no -r, -R or -a is needed",
    ),
];

/// The hint for an unknown option, if it is a known habit.
pub fn hint(arg: &str) -> Option<&'static str> {
    HABITS.iter().find(|(a, _)| *a == arg).map(|(_, h)| *h)
}

/// `e` with its tip replaced by the habit's hint when it is an unknown argument we know.
pub fn with_hint(mut e: clap::Error) -> clap::Error {
    if e.kind() != ErrorKind::UnknownArgument {
        return e;
    }
    let arg = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(a)) => a.clone(),
        _ => return e,
    };
    // `-Fq`, `--output=x`: the option itself.
    let name = arg.split('=').next().unwrap_or(&arg);
    if let Some(h) = hint(name) {
        e.insert(
            ContextKind::Suggested,
            ContextValue::StyledStrs(vec![StyledStr::from(h)]),
        );
    }
    e
}

#[cfg(test)]
mod tests {
    use crate::cli::Cli;

    fn error(args: &[&str]) -> String {
        let mut all = vec!["linuxdisk-mk"];
        all.extend_from_slice(args);
        Cli::parse_from_args(all)
            .expect_err("should be refused")
            .to_string()
    }

    #[test]
    fn habits_get_our_option_not_clap_tip() {
        for (args, want) in [
            (&["-F", "d", "o"][..], "-f (--force)"),
            (&["-d", "d", "o"], "SOURCE OUTPUT"),
            (&["-s", "1G", "d", "o"], "--size SIZE"),
            (&["d", "-o", "o"], "OUTPUT is the last argument"),
            (&["-j", "d", "o"], "-t ext3"),
        ] {
            let msg = error(args);
            assert!(msg.contains(want), "{args:?}: {msg}");
            assert!(!msg.contains("as a value"), "{args:?}: {msg}");
        }
    }

    #[test]
    fn other_unknown_options_keep_clap_message() {
        let msg = error(&["--frobnicate", "d", "o"]);
        assert!(msg.contains("unexpected argument '--frobnicate'"), "{msg}");
    }
}
