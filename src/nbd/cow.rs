//! TODO: being written.

use std::path::Path;
use std::sync::Arc;

use super::{Export, Extent};

/// Copy-on-write overlay over a read-only export.
pub struct CowExport {
    base: Arc<dyn Export>,
}

impl CowExport {
    pub fn new(base: Arc<dyn Export>, _tmpdir: &Path) -> std::io::Result<CowExport> {
        Ok(CowExport { base })
    }
}

impl Export for CowExport {
    fn size(&self) -> u64 {
        self.base.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.base.read_at(buf, offset)
    }
    fn extents(&self, offset: u64, len: u64) -> std::io::Result<Vec<Extent>> {
        self.base.extents(offset, len)
    }
}
