//! The command line and its documentation: `--help` lists every option of the issue, `--version`
//! prints the package version, and man/linuxdisk-mk.1 stays in step with `--help` (every option in
//! `--help` is in the man page's OPTIONS section, and every option the section documents is in
//! `--help`). A missing man page fails. The page renders with groff without warnings, every option
//! an entry of its own; `--help`, the man page and README list the same size suffixes, the man
//! page and README the exit statuses of signals, and none calls nbdkit's manual "the seed".

use std::collections::BTreeSet;

use crate::common::*;

/// Option tokens (`-t`, `--type`) in `text`: a dash (or two) at a word start followed by a letter.
fn option_tokens(text: &str) -> BTreeSet<String> {
    let b = text.as_bytes();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < b.len() {
        let at_word_start = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'-');
        if b[i] == b'-' && at_word_start {
            let dashes = if b.get(i + 1) == Some(&b'-') { 2 } else { 1 };
            let s = i + dashes;
            let mut e = s;
            while e < b.len() && (b[e].is_ascii_alphanumeric() || b[e] == b'-') {
                e += 1;
            }
            if e > s && b[s].is_ascii_alphabetic() && (dashes == 2 || e == s + 1) {
                out.insert(text[i..e].trim_end_matches('-').to_owned());
            }
            i = e.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// Options `--help` documents: tokens on its option lines (those starting with a dash).
fn help_options() -> BTreeSet<String> {
    let run = run_bin(["--help"]);
    run.assert_ok();
    assert!(
        run.stdout.contains("Usage"),
        "--help prints no usage on stdout\n{}",
        run.describe()
    );
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with('-'))
        .collect();
    option_tokens(&lines.join("\n"))
}

/// The man page's option sections (OPTIONS and the generated sections after it, such as
/// SERVING OVER NBD: each starts with an option's `.TP`), with roff escapes for dashes and fonts
/// removed.
fn man_options_section() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/man/linuxdisk-mk.1");
    let man = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let mut text = man
        .replace("\\-", "-")
        .replace("\\(em", " ")
        .replace("\\(en", " ");
    for f in ["\\fB", "\\fI", "\\fR", "\\fP", "\\f(CW", "\\fC"] {
        text = text.replace(f, "");
    }
    let start = text
        .lines()
        .position(|l| l.trim() == ".SH OPTIONS" || l.trim() == ".SH \"OPTIONS\"")
        .unwrap_or_else(|| panic!("{path} has no .SH OPTIONS section"));
    let all: Vec<&str> = text.lines().collect();
    let mut lines = Vec::new();
    let mut i = start + 1;
    while i < all.len() {
        if all[i].starts_with(".SH") {
            // Another generated option section goes on; prose ends them.
            if all.get(i + 1) != Some(&".TP") {
                break;
            }
        } else {
            lines.push(all[i]);
        }
        i += 1;
    }
    lines.join("\n")
}

/// Option tokens on the OPTIONS section's heading lines (the line after `.TP`, and `.IP`/`.It`).
fn man_heading_options(section: &str) -> BTreeSet<String> {
    let lines: Vec<&str> = section.lines().collect();
    let mut headings = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with(".TP") {
            if let Some(next) = lines.get(i + 1) {
                headings.push(*next);
            }
        } else if l.starts_with(".IP") || l.starts_with(".It") {
            headings.push(l);
        }
    }
    // mdoc writes `.It Fl t , Fl -type`: "Fl x" is "-x".
    option_tokens(&headings.join("\n").replace("Fl ", "-"))
}

#[test]
fn help_lists_every_option() {
    let have = help_options();
    for want in [
        "-t",
        "--type",
        "-L",
        "--label",
        "--size",
        "--partition",
        "--block-size",
        "-f",
        "--force",
        "-q",
        "-v",
        "--help",
        "--version",
    ] {
        assert!(
            have.contains(want),
            "--help does not list {want}; it lists {have:?}"
        );
    }
    let short = run_bin(["-h"]);
    short.assert_ok();
    assert!(
        short.stdout.contains("--size"),
        "-h does not list the options\n{}",
        short.describe()
    );
}

#[test]
fn help_states_the_values_of_type_partition_and_block_size() {
    let run = run_bin(["--help"]);
    run.assert_ok();
    for v in ["ext2", "ext3", "ext4", "gpt", "none", "4096"] {
        assert!(
            run.stdout.contains(v),
            "--help does not mention {v:?}\n{}",
            run.describe()
        );
    }
}

#[test]
fn version_prints_the_package_version() {
    let run = run_bin(["--version"]);
    run.assert_ok();
    let v = env!("CARGO_PKG_VERSION");
    assert!(
        run.stdout.contains("linuxdisk-mk") && run.stdout.contains(v),
        "--version should print \"linuxdisk-mk {v}\"\n{}",
        run.describe()
    );
    assert_eq!(
        run.stdout.trim().lines().count(),
        1,
        "--version prints more than one line"
    );
}

#[test]
fn every_option_in_help_is_in_the_man_page() {
    let help = help_options();
    let section = man_options_section();
    let man = option_tokens(&section);
    let missing: Vec<&String> = help.iter().filter(|o| !man.contains(*o)).collect();
    assert!(
        missing.is_empty(),
        "options in --help but not in the man page's OPTIONS section: {missing:?}"
    );
}

#[test]
fn every_option_in_the_man_page_is_in_help() {
    let help = help_options();
    let man = man_heading_options(&man_options_section());
    assert!(
        !man.is_empty(),
        "no options found in the man page's OPTIONS section headings"
    );
    for o in ["--size", "--block-size", "--partition"] {
        assert!(
            man.contains(o),
            "the man page's OPTIONS headings lack {o} (found {man:?})"
        );
    }
    let extra: Vec<&String> = man.iter().filter(|o| !help.contains(*o)).collect();
    assert!(
        extra.is_empty(),
        "options in the man page but not in --help: {extra:?} (--help has {help:?})"
    );
}

#[test]
fn option_token_parser_reads_help_and_roff_forms() {
    let t = option_tokens(
        "  -t, --type <TYPE>\n      --block-size <BYTES>\n  - gpt: a value, not an option",
    );
    let want: BTreeSet<String> = ["-t", "--type", "--block-size"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(t, want);
    let section =
        ".TP\n.BR -t \", \" --type \" \" type\nText mentioning mke2fs -d.\n.TP\n.BR --size";
    let m = man_heading_options(section);
    let want: BTreeSet<String> = ["-t", "--type", "--size"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(m, want);
}

/// The user-facing texts: `--help`, the man page (as groff renders it) and README.md.
fn user_texts() -> Vec<(&'static str, String)> {
    let root = env!("CARGO_MANIFEST_DIR");
    let help = run_bin(["--help"]);
    help.assert_ok();
    let man = tool_ok(
        "groff",
        [
            "-man",
            "-Tutf8",
            "-P-cbou",
            "-rLL=100n",
            &format!("{root}/man/linuxdisk-mk.1"),
        ],
    );
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README.md");
    vec![
        ("--help", help.stdout),
        ("the man page", man),
        ("README.md", readme),
    ]
}

#[test]
fn man_page_renders_without_warnings_and_every_option_is_an_entry() {
    let page = concat!(env!("CARGO_MANIFEST_DIR"), "/man/linuxdisk-mk.1");
    let check = tool("groff", ["-man", "-Tutf8", "-ww", "-z", page]);
    assert_eq!(
        (check.code, check.out.as_str()),
        (Some(0), ""),
        "groff warns"
    );
    let text = tool_ok("groff", ["-man", "-Tutf8", "-P-cbou", "-rLL=100n", page]);
    // Each option of --help is on an entry's heading line: one that starts with an option
    // (markup such as "written..TP" once swallowed the -q entry into the text before it).
    let headings: Vec<&str> = text
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .collect();
    let listed = option_tokens(&headings.join("\n"));
    for o in help_options() {
        assert!(
            listed.contains(&o),
            "{o} is not an entry of the rendered man page"
        );
    }
}

#[test]
fn user_facing_texts_agree_on_suffixes_and_exit_statuses_and_never_say_seed() {
    for (what, text) in user_texts() {
        let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains("K, M, G, T, P") || flat.contains("K, M, G, T and P"),
            "{what} does not list the size suffixes K, M, G, T, P"
        );
        for word in ["seed's", "the seed", "as the seed"] {
            assert!(
                !flat.to_lowercase().contains(word),
                "{what} says {word:?} (an internal name for nbdkit's linuxdisk manual)"
            );
        }
        if what != "--help" {
            for status in ["130", "143"] {
                assert!(
                    flat.contains(status),
                    "{what} does not document exit status {status}"
                );
            }
        }
    }
}
