//! Generates the man page and the shell completions (bash, zsh, fish) from the command line's
//! one definition, `src/cli/args.rs`, which this script compiles as a module of its own. The man
//! page's prose comes from the template `man/linuxdisk-mk.1.in`; clap_mangen writes its option
//! sections, clap_complete the completions. The results go to OUT_DIR, where
//! `src/cli/generated.rs` includes them for `linuxdisk-mk --generate`.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

// The same files as the crate's `cli::args` and `cli::values`: `args` names `super::values`.
#[allow(dead_code)]
#[path = "src/cli/args.rs"]
mod args;
#[allow(dead_code)]
#[path = "src/cli/values.rs"]
mod values;

const TEMPLATE: &str = "man/linuxdisk-mk.1.in";

fn main() {
    for input in [TEMPLATE, "src/cli/args.rs", "src/cli/values.rs", "build.rs"] {
        println!("cargo:rerun-if-changed={input}");
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cmd = args::Cli::command();
    write(&out.join("linuxdisk-mk.1"), man_page(&cmd).as_bytes());
    for (shell, name) in [
        (Shell::Bash, "linuxdisk-mk.bash"),
        (Shell::Zsh, "_linuxdisk-mk"),
        (Shell::Fish, "linuxdisk-mk.fish"),
    ] {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "linuxdisk-mk", &mut text);
        write(&out.join(name), &text);
    }
}

/// The template with its OPTIONS marker line replaced by the generated option sections (one
/// `.SH` per help heading) and its VERSION marker by the package version.
fn man_page(cmd: &clap::Command) -> String {
    let template =
        std::fs::read_to_string(TEMPLATE).unwrap_or_else(|e| panic!("cannot read {TEMPLATE}: {e}"));
    for marker in ["@OPTIONS@\n", "@VERSION@"] {
        let n = template.matches(marker).count();
        assert_eq!(n, 1, "{TEMPLATE} holds {marker:?} {n} times, not once");
    }
    let mut options = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render_options_section(&mut options)
        .expect("rendering to memory");
    let options = String::from_utf8(options).expect("clap_mangen writes UTF-8");
    template
        .replace("@OPTIONS@\n", &options)
        .replace("@VERSION@", env!("CARGO_PKG_VERSION"))
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
