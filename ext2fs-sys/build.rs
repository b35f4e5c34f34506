//! Finds libext2fs with pkg-config, generates its bindings with bindgen and compiles the C shim.
use std::{env, path::PathBuf};

fn main() {
    let lib = pkg_config::Config::new()
        .atleast_version("1.46")
        .probe("ext2fs")
        .expect("libext2fs not found: install libext2fs-dev and pkg-config");
    let com_err = pkg_config::probe_library("com_err").expect("com_err not found (comerr-dev)");

    let mut shim = cc::Build::new();
    shim.file("shim.c").warnings(true);
    for p in lib.include_paths.iter().chain(&com_err.include_paths) {
        shim.include(p);
    }
    shim.compile("ldk_shim");
    println!("cargo:rerun-if-changed=shim.c");
    println!("cargo:rerun-if-changed=shim.h");
    println!("cargo:rerun-if-changed=wrapper.h");

    let mut builder = bindgen::Builder::default()
        .header("wrapper.h")
        .allowlist_function("ext2fs_.*")
        .allowlist_function("io_channel_.*")
        .allowlist_function("ldk_.*")
        .allowlist_type("ext2_.*|ext3_.*|ext4_.*|struct_ext2_.*|errcode_t|blk64_t|dgrp_t")
        .allowlist_var("EXT2_.*|EXT3_.*|EXT4_.*|LINUX_S_.*|EXT2_ET_.*|EXT2_FLAG_.*|EXT2_MKJOURNAL_.*|BMAP_.*|EXT2_FALLOCATE_.*|JBD2_.*")
        .derive_default(true)
        .layout_tests(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for p in lib.include_paths.iter().chain(&com_err.include_paths) {
        builder = builder.clang_arg(format!("-I{}", p.display()));
    }
    let bindings = builder
        .generate()
        .expect("bindgen failed on libext2fs headers");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("bindings.rs");
    bindings.write_to_file(out).expect("writing bindings");
}
