//! The command line and its documentation: `--help` lists the options and their values,
//! `--version` prints the package version, and the man page and shell completions are the ones
//! generated from the command line's definition: `man/linuxdisk-mk.1` is exactly what
//! `--generate man` prints (build.rs fills the prose template `man/linuxdisk-mk.1.in`), it
//! renders without a groff warning, and the bash, zsh and fish completions load in those shells
//! and complete our options. The user-facing texts agree on size suffixes and exit statuses.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::common::*;

fn generate(kind: &str) -> String {
    let run = run_bin(["--generate", kind]);
    run.assert_ok();
    assert!(!run.stdout.is_empty(), "--generate {kind} printed nothing");
    run.stdout
}

/// Writes `text` to a file in `dir` and returns its path.
fn file_with(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `prog args` and returns its stdout, failing the test with its stderr otherwise.
fn shell(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {prog}: {e} (scripts/deps.sh installs it)"));
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn help_lists_every_option_with_its_values() {
    let run = run_bin(["--help"]);
    run.assert_ok();
    for want in [
        "-t, --type",
        "-L, --label",
        "--size",
        "--partition",
        "--block-size",
        "-f, --force",
        "-q, --quiet",
        "-v, --verbose",
        "--generate",
        "--serve",
        "--socket",
        "--run",
        "-h, --help",
        "-V, --version",
        "Serving over NBD:",
        "ext2",
        "ext3",
        "ext4",
        "gpt",
        "none",
        "4096",
    ] {
        assert!(
            run.stdout.contains(want),
            "--help lacks {want:?}\n{}",
            run.describe()
        );
    }
    let short = run_bin(["-h"]);
    short.assert_ok();
    assert!(short.stdout.contains("--size"), "{}", short.describe());
}

#[test]
fn usage_shows_the_build_serve_and_generate_forms() {
    let run = run_bin(["--help"]);
    run.assert_ok();
    for form in [
        "linuxdisk-mk [OPTIONS] SOURCE OUTPUT",
        "linuxdisk-mk --serve [SERVE OPTIONS] [OPTIONS] SOURCE",
        "linuxdisk-mk --generate KIND",
    ] {
        assert!(
            run.stdout.contains(form),
            "usage lacks {form:?}\n{}",
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
        run.stdout.starts_with(&format!("linuxdisk-mk {v}")),
        "--version should start with \"linuxdisk-mk {v}\"\n{}",
        run.describe()
    );
}

#[test]
fn man_page_is_the_generated_one() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/man/linuxdisk-mk.1");
    let committed =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let generated = generate("man");
    assert!(
        committed == generated,
        "{path} is not what `linuxdisk-mk --generate man` prints: edit src/cli/args.rs or \
         man/linuxdisk-mk.1.in, then run `cargo run -q -- --generate man > man/linuxdisk-mk.1`"
    );
}

#[test]
fn man_page_has_its_prose_and_every_option() {
    let man = generate("man");
    for section in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH DESCRIPTION",
        ".SH OPTIONS",
        ".SH \"SERVING OVER NBD\"",
        ".SH SERVING",
        ".SH EXIT STATUS",
        ".SH ENVIRONMENT",
        ".SH EXAMPLES",
        ".SH SEE ALSO",
    ] {
        assert!(man.contains(section), "the man page lacks {section}");
    }
    for marker in ["@OPTIONS@", "@VERSION@"] {
        assert!(
            !man.contains(marker),
            "the template marker {marker} was left in the man page"
        );
    }
    // Every long option on --help's option lines has an entry (roff escapes its dashes).
    let longs: Vec<String> = help_options()
        .into_iter()
        .filter_map(|o| o.strip_prefix("--").map(str::to_string))
        .collect();
    assert!(longs.len() > 20, "found only {longs:?} in --help");
    for long in longs {
        let entry = format!("\\fB\\-\\-{}\\fR", long.replace('-', "\\-"));
        assert!(man.contains(&entry), "the man page has no entry {entry}");
    }
}

#[test]
fn readme_names_every_long_option() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    for o in help_options() {
        if !o.starts_with("--") || o == "--help" || o == "--version" {
            continue;
        }
        // As code: `--opt`, `--opt VALUE`, `--opt=…`, or in a command line.
        let named = readme.match_indices(o.as_str()).any(|(i, _)| {
            !readme[i + o.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '-')
        });
        assert!(named, "README.md does not mention {o}");
    }
}

#[test]
fn bash_completion_completes_our_options() {
    let dir = tempdir();
    let script = file_with(dir.path(), "linuxdisk-mk.bash", &generate("complete-bash"));
    // Complete as bash does: call the function that `complete -p` names for linuxdisk-mk.
    let probe = format!(
        "source {}; f=$(complete -p linuxdisk-mk | sed -n 's/.* -F \\([^ ]*\\) .*/\\1/p'); \
         COMP_WORDS=(linuxdisk-mk --block-s); COMP_CWORD=1; COMP_LINE='linuxdisk-mk --block-s'; \
         COMP_POINT=${{#COMP_LINE}}; \"$f\" linuxdisk-mk --block-s linuxdisk-mk; \
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let words = shell("bash", &["-c", &probe]);
    assert!(
        words.lines().any(|w| w.trim() == "--block-size"),
        "bash completes --block-s to {words:?}"
    );
}

#[test]
fn zsh_and_fish_completions_parse() {
    let dir = tempdir();
    let zsh = file_with(dir.path(), "_linuxdisk-mk", &generate("complete-zsh"));
    shell("zsh", &["-n", zsh.to_str().unwrap()]);
    let fish = file_with(dir.path(), "linuxdisk-mk.fish", &generate("complete-fish"));
    shell("fish", &["--no-execute", fish.to_str().unwrap()]);
    let listed = shell(
        "fish",
        &[
            "-c",
            &format!(
                "source {}; complete -C 'linuxdisk-mk --part-'",
                fish.display()
            ),
        ],
    );
    for want in ["--part-type", "--part-label", "--part-guid"] {
        assert!(
            listed.contains(want),
            "fish completes --part- to {listed:?}"
        );
    }
}

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
