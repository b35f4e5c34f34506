//! What standard error shows while a build runs. On a terminal (a pseudo-terminal under
//! `script`): one bar per phase, each labelled, phases in order; the build's bar counts bytes
//! against the tree's total with entries as a second count, and neither goes back; the bar is
//! gone at the end, after an error and after Ctrl-C; -v lines are whole lines above it. On a
//! pipe: nothing but the summary, and with -v plain lines (no carriage returns or escapes).
//! Writing to stderr never stops a build: with stderr a closed pipe, the image is still made.

use std::ffi::OsString;
use std::path::Path;

use crate::common::opens::Gate;
use crate::common::terminal::{on_terminal, Screen};
use crate::common::*;

const LABELS: [&str; 4] = ["scanning", "building", "writing", "syncing"];

/// The phase label a frame starts with, if any.
fn label(frame: &str) -> Option<&'static str> {
    let first = frame.split_whitespace().next()?;
    LABELS.iter().copied().find(|l| *l == first)
}

/// Whether a frame holds a bar or a spinner.
fn has_bar(frame: &str) -> bool {
    frame
        .chars()
        .any(|c| c == '░' || c == '█' || ('\u{2800}'..='\u{28ff}').contains(&c))
}

/// A size as the display prints it ("40.0 MiB", "512 bytes") in bytes (approximately).
fn parse_size(s: &str) -> f64 {
    let (n, unit) = s.split_once(' ').unwrap_or((s, "bytes"));
    let n: f64 = n.parse().unwrap_or_else(|_| panic!("not a size: {s:?}"));
    let shift = match unit {
        "bytes" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        _ => panic!("not a size: {s:?}"),
    };
    n * (1u64 << shift) as f64
}

/// `building ... DONE/TOTAL, N/M entries...`: (done bytes, total text, N, M).
fn building_counts(frame: &str) -> (f64, String, u64, u64) {
    let parse = || -> Option<(f64, String, u64, u64)> {
        let rest = frame.rsplit(['░', '█']).next()?.trim();
        let (sizes, rest) = rest.split_once(", ")?;
        let (done, total) = sizes.split_once('/')?;
        let (n, m) = rest.split(' ').next()?.split_once('/')?;
        Some((
            parse_size(done),
            total.to_string(),
            n.parse().ok()?,
            m.parse().ok()?,
        ))
    };
    parse().unwrap_or_else(|| panic!("a building frame without DONE/TOTAL, N/M entries: {frame:?}"))
}

/// Every frame is a labelled phase or a line of the summary (or of -v).
fn phases(screen: &Screen) -> Vec<&'static str> {
    let mut seen: Vec<&'static str> = Vec::new();
    for f in screen.shown() {
        if !has_bar(f) && (f.starts_with("linuxdisk-mk: ") || f.starts_with("  ")) {
            continue;
        }
        let l = label(f).unwrap_or_else(|| panic!("an unlabelled frame: {f:?}\n{screen:#?}"));
        if seen.last() != Some(&l) {
            seen.push(l);
        }
    }
    seen
}

/// The lines left on the screen hold no bar and no phase label.
fn assert_cleared(screen: &Screen) {
    for l in &screen.lines {
        assert!(
            !has_bar(l) && label(l).is_none(),
            "a bar is left on the screen: {l:?}\n{:#?}",
            screen.lines
        );
    }
}

/// The entries of a tree, as the binary counts them (a dry run's JSON).
fn entries_of(src: &Path, tmp: &Path) -> u64 {
    let run = run_bin([
        OsString::from("--dry-run"),
        "--json".into(),
        src.into(),
        tmp.join("dry.img").into(),
    ]);
    run.assert_ok();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("--json prints JSON");
    v["entries"].as_u64().expect("entries")
}

/// `src` in `tmp`, a tree of `nfiles` files holding `total` bytes.
fn sized_src(tmp: &Path, nfiles: usize, total: u64) -> std::path::PathBuf {
    let src = tmp.join("src");
    std::fs::create_dir(&src).unwrap();
    build_sized_tree(&src, nfiles, total);
    src
}

/// A build on a terminal that succeeds, having shown every phase, in order, labelled, and left
/// no bar behind; what the terminal showed.
fn built_on_terminal(args: &[OsString], dir: &Path) -> Screen {
    let run = on_terminal(args, dir, None);
    assert!(run.status.success(), "{:#?}", run.screen);
    let screen = run.screen;
    assert_eq!(
        phases(&screen),
        LABELS,
        "phases shown\n{:#?}",
        screen.shown()
    );
    assert_cleared(&screen);
    screen
}

#[test]
fn a_terminal_shows_one_labelled_bar_per_phase_counting_bytes_then_clears_it() {
    let tmp = tempdir();
    let src = sized_src(tmp.path(), 60, 40 * MIB);
    let entries = entries_of(&src, tmp.path());
    let out = tmp.path().join("out.img");
    let screen = &built_on_terminal(&[src.into(), out.into()], tmp.path());
    let mut last = (0.0, 0);
    for f in screen
        .shown()
        .into_iter()
        .filter(|f| label(f) == Some("building"))
    {
        let (done, total, n, m) = building_counts(f);
        assert_eq!(
            total, "40.0 MiB",
            "the total is the tree's file data: {f:?}"
        );
        assert_eq!(m, entries, "the entry total is the tree's: {f:?}");
        assert!(
            done >= last.0 && n >= last.1,
            "the count went back: {f:?} after {last:?}"
        );
        last = (done, n);
    }
    assert!(
        screen
            .lines
            .iter()
            .any(|l| l.starts_with("linuxdisk-mk: wrote ")),
        "no summary\n{:#?}",
        screen.lines
    );
}

#[test]
fn verbose_lines_on_a_terminal_are_whole_lines_above_the_bar() {
    let tmp = tempdir();
    let src = sized_src(tmp.path(), 60, 20 * MIB);
    let out = tmp.path().join("out.img");
    let screen = &built_on_terminal(&["-v".into(), src.into(), out.into()], tmp.path());
    let lines: Vec<&String> = screen.lines.iter().filter(|l| !l.is_empty()).collect();
    for l in &lines {
        assert!(
            l.starts_with("linuxdisk-mk: ") || l.starts_with("  "),
            "a line broken by the bar: {l:?}\n{lines:#?}"
        );
    }
    for want in ["scanning: ", "building: ", "the tree needs", "wrote "] {
        assert_eq!(
            lines.iter().filter(|l| l.contains(want)).count(),
            1,
            "-v says {want:?} once, as a whole line\n{lines:#?}"
        );
    }
}

#[test]
fn ctrl_c_on_a_terminal_clears_the_bar_and_leaves_nothing() {
    let tmp = tempdir();
    let src = sized_src(tmp.path(), 10, 8 * MIB);
    let last = src.join("d09/file0009");
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let img = out.join("disk.img");
    // The build is held in the copy of its last file while the bar shows "building".
    let gate = Gate::reads(&last);
    let mut held = None;
    let mut ready = |shown: &str| {
        if held.is_none() {
            let Some(pid) = pid_running_with(&img) else {
                return false;
            };
            held = Some(gate.wait_for(pid));
        }
        Screen::replay(shown)
            .shown()
            .iter()
            .any(|f| label(f) == Some("building"))
    };
    let run = on_terminal([&src, &img], tmp.path(), Some(&mut ready));
    drop(held);
    assert_eq!(run.status.code(), Some(130), "{:#?}", run.screen);
    assert_cleared(&run.screen);
    assert!(
        run.screen.raw.ends_with("\r\x1b[2K"),
        "the bar's line is not cleared last: {:?}",
        run.screen.raw
    );
    assert!(dir_names(&out).is_empty(), "left: {:?}", dir_names(&out));
}

/// The process id of the binary running with `arg` on its command line.
fn pid_running_with(arg: &Path) -> Option<u32> {
    let want = arg.as_os_str().as_encoded_bytes();
    for entry in std::fs::read_dir("/proc").ok()? {
        let name = entry.ok()?.file_name();
        let Ok(pid) = name.to_string_lossy().parse::<u32>() else {
            continue;
        };
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if exe == Path::new(BIN) && cmdline.split(|&b| b == 0).any(|a| a == want) {
            return Some(pid);
        }
    }
    None
}

#[test]
fn on_a_pipe_only_the_summary_and_with_v_plain_lines() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    build_small_tree(&src);
    for (extra, want) in [
        (&[][..], "linuxdisk-mk: wrote "),
        (&["-v"], "linuxdisk-mk: building: "),
        (&["-q"], ""),
    ] {
        let out = tmp.path().join("out.img");
        let mut args: Vec<OsString> = extra.iter().map(OsString::from).collect();
        args.extend([src.clone().into(), out.clone().into()]);
        let run = run_bin(&args);
        run.assert_ok();
        assert!(
            !run.stderr.contains(['\r', '\x1b']),
            "{extra:?}: a bar's bytes on a pipe\n{}",
            run.describe()
        );
        for l in run.stderr.lines() {
            assert!(
                l.starts_with("linuxdisk-mk: ") || l.starts_with("  "),
                "{extra:?}: {l:?}\n{}",
                run.describe()
            );
        }
        match want {
            "" => assert_eq!(run.stderr, "", "-q prints nothing\n{}", run.describe()),
            w => assert!(run.stderr.contains(w), "{extra:?}\n{}", run.describe()),
        }
        if extra.is_empty() {
            assert!(
                !run.stderr.contains("scanning"),
                "phases on a pipe without -v\n{}",
                run.describe()
            );
        }
        std::fs::remove_file(&out).unwrap();
    }
}

#[test]
fn a_closed_stderr_does_not_stop_the_build() {
    let tmp = tempdir();
    let src = sized_src(tmp.path(), 60, 10 * MIB);
    let out = tmp.path().join("out.img");
    // The issue's command: `head -1` exits after the first line, closing the pipe.
    let script = r#""$0" -v "$1" "$2" 2>&1 | head -1; exit "${PIPESTATUS[0]}""#;
    let run = run_cmd_timeout(
        {
            let mut c = std::process::Command::new("bash");
            c.arg("-c").arg(script).arg(BIN);
            c
        },
        [&src, &out],
        std::time::Duration::from_secs(300),
    );
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.describe());
    with_fs_device(&out, PART_OFFSET, assert_e2fsck_clean);
}
