//! The integration tests: one binary (as ripgrep's tests/tests.rs), so the shared helpers in
//! `common` and the library are compiled and linked once. Each `tests/NAME.rs` is a module of it
//! and keeps its own doc comment saying what it checks; Cargo.toml sets `autotests = false` so
//! that Cargo does not build those files as binaries of their own, and the test below fails when
//! a file is not declared here (it would not run at all).
//!
//! scripts/test.sh runs them with cargo-nextest, each test a process, the longest first (the
//! qemu boots, two at a time, then the other long ones) as .config/nextest.toml sets out; a new
//! long test belongs in its priority filters. One module: `cargo nextest run --test tests NAME::`
//! or `cargo test --test tests NAME::`.
//!
//! These tests run as root (CI does) and never skip: without root they panic with a clear message.

mod common;

mod boot;
mod boot_debian;
mod changing;
mod cli_docs;
mod cli_ux;
mod clone;
mod compose;
mod efi;
mod efi_boot;
mod errors;
mod examples;
mod fs_options;
mod fuzz_regressions;
mod harness;
mod htree;
mod interrupt;
mod lazy_attacks;
mod limits;
mod million;
mod mount_points;
mod nbd_boot;
mod nbd_clients;
mod nbd_lazy;
mod nbd_limits;
mod nbd_protocol;
mod nbd_robust;
mod nbd_run;
mod nbd_stop;
mod nbd_tls;
mod oci;
mod output_mode;
mod progress;
mod report_json;
mod reproducible;
mod roundtrip;
mod sizing;
mod tar;
mod zero_blocks;

/// Every `tests/*.rs` file is declared above: with `autotests = false`, one that is not would
/// never be compiled or run.
#[test]
fn every_test_file_is_a_module_of_this_binary() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let this = std::fs::read_to_string(dir.join("tests.rs")).expect("read tests/tests.rs");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("list tests/") {
        let name = entry.expect("list tests/").file_name();
        let name = name.to_string_lossy();
        if let Some(module) = name.strip_suffix(".rs").filter(|m| *m != "tests") {
            if !this.lines().any(|l| l == format!("mod {module};")) {
                missing.push(name.into_owned());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not declared in tests/tests.rs (so never run): {missing:?}"
    );
}
