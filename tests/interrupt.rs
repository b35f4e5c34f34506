//! SIGINT while a big file is being copied: the build exits with 130 at once, the temp file
//! beside OUTPUT is gone, and its space is released (by a helper that holds it until the build
//! has exited, so that the exit does not wait for the kernel to drop hundreds of MiB of page
//! cache). How long the exit takes is measured by hand, not here (see the report).

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};

use crate::common::opens::Gate;
use crate::common::*;

/// How long the helper may hold the deleted temp file after the build exited: only reached if
/// it never lets go.
const RELEASE_WAIT: Duration = Duration::from_secs(120);

/// Processes that hold a deleted file whose name starts with `prefix` open.
fn holders_of_deleted(prefix: &Path) -> Vec<String> {
    let prefix = prefix.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for proc_entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = proc_entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let target = std::fs::read_link(fd.path()).unwrap_or_default();
            let t = target.to_string_lossy();
            if t.starts_with(&prefix) && t.ends_with(" (deleted)") {
                out.push(format!("pid {}: {t}", name.to_string_lossy()));
            }
        }
    }
    out
}

#[test]
fn sigint_while_a_big_file_is_copied_exits_130_and_releases_the_temp_file() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    // 512 MiB of data, copied first; then a small file, whose read holds the build.
    let big = std::fs::File::create(src.join("a-big")).unwrap();
    let chunk: Vec<u8> = (0..(4 << 20) as u32).map(|i| (i % 251) as u8 + 1).collect();
    for i in 0..128u64 {
        big.write_all_at(&chunk, i * (4 << 20)).unwrap();
    }
    drop(big);
    std::fs::write(src.join("b-last"), b"the last file").unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let img = out.join("disk.img");

    let gate = Gate::reads(&src.join("b-last"));
    let mut child = Command::new(BIN)
        .arg(&src)
        .arg(&img)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Lines::of(child.stderr.take().unwrap());
    let held = gate.wait_for(child.id());
    let temps: Vec<_> = dir_names(&out).into_iter().collect();
    assert_eq!(temps.len(), 1, "one temp file beside OUTPUT: {temps:?}");
    let temp = out.join(&temps[0]);
    assert!(
        allocated(&temp) >= 512 * MIB,
        "the big file is in the temp file before the signal"
    );
    kill_process(Pid::from_child(&child), Signal::INT).unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(120)).expect("exits after SIGINT");
    drop(held);
    assert_eq!(status.code(), Some(130), "stderr: {:?}", stderr.all());
    assert!(dir_names(&out).is_empty(), "left: {:?}", dir_names(&out));
    // Whoever holds the deleted temp file lets go of it.
    let deadline = Instant::now() + RELEASE_WAIT;
    loop {
        let holders = holders_of_deleted(&out.join(".disk.img."));
        if holders.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the deleted temp file is still held: {holders:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
