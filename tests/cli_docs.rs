//! The command line and its documentation: `--help` lists the options and their values,
//! `--version` prints the package version, and the man page and shell completions are the ones
//! generated from the command line's definition: `man/linuxdisk-mk.1` is exactly what
//! `--generate man` prints (build.rs fills the prose template `man/linuxdisk-mk.1.in`), it
//! renders without a groff warning, and the bash, zsh and fish completions load in those shells
//! and complete our options.

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
    assert!(
        !man.contains('@'),
        "a template marker was left in the man page"
    );
    // Every long option of --help has an entry (roff escapes its dashes).
    let help = run_bin(["--help"]).stdout;
    let longs: Vec<&str> = help
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()))
        .filter(|w| w.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
        .collect();
    assert!(longs.len() > 20, "found only {longs:?} in --help");
    for long in longs {
        let entry = format!("\\fB\\-\\-{}\\fR", long.replace('-', "\\-"));
        assert!(man.contains(&entry), "the man page has no entry {entry}");
    }
}

#[test]
fn man_page_renders_without_warnings() {
    let dir = tempdir();
    let page = file_with(dir.path(), "linuxdisk-mk.1", &generate("man"));
    let out = Command::new("groff")
        .args(["-man", "-ww", "-z"])
        .arg(&page)
        .output()
        .expect("running groff (groff-base)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "groff warns: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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
