//! The man page and shell completions that `build.rs` generated from the command line's
//! definition (`args.rs`) and the man page's prose template (`man/linuxdisk-mk.1.in`).

use super::Generate;

/// The text `--generate KIND` prints.
pub fn text(kind: Generate) -> &'static str {
    match kind {
        Generate::Man => include_str!(concat!(env!("OUT_DIR"), "/linuxdisk-mk.1")),
        Generate::CompleteBash => include_str!(concat!(env!("OUT_DIR"), "/linuxdisk-mk.bash")),
        Generate::CompleteZsh => include_str!(concat!(env!("OUT_DIR"), "/_linuxdisk-mk")),
        Generate::CompleteFish => include_str!(concat!(env!("OUT_DIR"), "/linuxdisk-mk.fish")),
    }
}
