//! linuxdisk-mk: parse the command line, run, print any error as one line and exit with
//! 0 (success), 1 (failure) or 2 (usage error, from clap).
#![forbid(unsafe_code)]

use linuxdisk_mk::{cli::Cli, run};

fn main() {
    let cli = Cli::parse_args();
    let result = run::with_big_stack(move || run::run(&cli).map_err(|e| format!("{e:#}")));
    match result {
        Ok(status) => std::process::exit(status),
        Err(msg) => {
            // Never a panic, even when stderr is gone: the exit status still says it failed.
            linuxdisk_mk::progress::line(&msg.replace('\n', "\\n"));
            std::process::exit(1);
        }
    }
}
