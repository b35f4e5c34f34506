//! Fuzzes the server side of the NBD handshake: arbitrary bytes as everything the client sends.

#![no_main]

use libfuzzer_sys::fuzz_target;
use linuxdisk_mk::nbd::export::MemExport;
use linuxdisk_mk::nbd::handshake::{handshake, ExportInfo};

fuzz_target!(|data: &[u8]| {
    let export = MemExport::new(vec![0; 4096], data.len() % 2 == 1);
    let info = ExportInfo {
        name: "disk".into(),
        description: "fuzz".into(),
    };
    let mut out = Vec::new();
    if let Ok(Some(neg)) = handshake(&mut &data[..], &mut out, &export, &info) {
        assert_eq!(neg.export_name, "disk");
        assert!(neg.structured || !neg.base_allocation);
    }
    // Nothing the client sends makes the server talk much more than the client did.
    assert!(
        out.len() <= 18 + 1024 + 64 * data.len(),
        "{} bytes out",
        out.len()
    );
});
