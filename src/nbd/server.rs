//! TODO: being written: listeners, threads, signals.

use std::path::PathBuf;
use std::sync::Arc;

use super::Export;

/// How and where to serve.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// `--socket PATH`: a Unix socket (mode 0600), removed on exit.
    pub socket: Option<PathBuf>,
    /// `--tcp [ADDR:]PORT`: 127.0.0.1 unless an address is given.
    pub tcp: Option<String>,
    /// `--run CMD`: captive mode.
    pub run: Option<String>,
    /// `--export-name NAME` (default "").
    pub export_name: String,
    /// A description for NBD_INFO_DESCRIPTION.
    pub description: String,
    /// `--pidfile FILE`, written once listening.
    pub pidfile: Option<PathBuf>,
    /// `-q`: don't print the URI.
    pub quiet: bool,
}

/// Serves `export` until a signal or, with `--run`, until the command exits; returns the exit
/// status for the process.
pub fn serve(_export: Arc<dyn Export>, _opts: &ServeOptions) -> anyhow::Result<i32> {
    anyhow::bail!("--serve is being written")
}
