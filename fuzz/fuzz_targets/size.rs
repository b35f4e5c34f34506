//! Fuzzes the `--size` parser (`parse_bytes`, `SizeSpec`) and the `Human` formatter against an
//! independent model computed in u128: never a panic, never a wrapped value (anything past
//! u64::MAX bytes is an Err), and whatever `Human` prints exactly parses back to the same count.

#![no_main]

use libfuzzer_sys::fuzz_target;
use linuxdisk_mk::mkfs::size::{parse_bytes, Human, SizeSpec};

/// The documented grammar, evaluated without overflow: optional surrounding whitespace, ASCII
/// digits, then nothing, `B`, or K/M/G/T/P with an optional `B` or `iB` (any case).
fn model(s: &str) -> Option<u128> {
    let t = s.trim();
    let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(end);
    if digits.is_empty() {
        return None;
    }
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        "p" | "pb" | "pib" => 50,
        _ => return None,
    };
    let mut n: u128 = 0;
    for d in digits.bytes() {
        n = n * 10 + (d - b'0') as u128;
        if n > u64::MAX as u128 {
            return None; // too large before the suffix even applies
        }
    }
    let v = n << shift;
    (v <= u64::MAX as u128).then_some(v)
}

/// Checks what `Human(n)` prints: an exact form parses back to `n`; an approximate one
/// (`1.5 MiB`) is within half a tenth of its unit; a byte count (`100 bytes`) is `n`.
fn check_human(n: u64) {
    let h = Human(n).to_string();
    if let Some(num) = h.strip_suffix(" bytes") {
        assert_eq!(num.parse::<u64>(), Ok(n), "Human({n}) = {h:?}");
        assert!(n < 1 << 20, "Human({n}) = {h:?}: bytes for a big count");
    } else if let Some((num, unit)) = h.split_once(' ') {
        let shift = match unit {
            "MiB" => 20,
            "GiB" => 30,
            "TiB" => 40,
            _ => panic!("Human({n}) = {h:?}: unknown unit"),
        };
        let x: f64 = num.parse().unwrap_or_else(|_| panic!("Human({n}) = {h:?}"));
        let exact = n as f64 / (1u64 << shift) as f64;
        assert!(
            (x - exact).abs() <= 0.05 + exact * 1e-12,
            "Human({n}) = {h:?}"
        );
        assert!(x >= 1.0, "Human({n}) = {h:?}: below one unit");
    } else {
        assert_eq!(
            parse_bytes(&h),
            Ok(n),
            "Human({n}) = {h:?} does not parse back"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    // Human on any count at all.
    if data.len() >= 8 {
        check_human(u64::from_le_bytes(data[..8].try_into().unwrap()));
    }
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse_bytes(s);
    match (model(s), &parsed) {
        (Some(v), Ok(n)) => assert_eq!(v, *n as u128, "parse_bytes({s:?})"),
        // The message quotes the argument as given, like the other option parsers.
        (None, Err(e)) => assert!(e.contains(s), "{e:?}"),
        (m, p) => panic!("parse_bytes({s:?}) = {p:?}, the model says {m:?}"),
    }
    if let Ok(n) = parsed {
        check_human(n);
    }
    let spec = s.parse::<SizeSpec>();
    let expected = match s.strip_prefix('+') {
        Some(rest) => parse_bytes(rest).map(SizeSpec::Free),
        None => parsed.map(SizeSpec::Total),
    };
    assert_eq!(spec, expected, "SizeSpec from {s:?}");
    if let Ok(SizeSpec::Free(n) | SizeSpec::Total(n)) = spec {
        // What the help and messages show parses back to the same spec.
        let h = Human(n).to_string();
        if !h.contains(' ') {
            let again = if matches!(spec, Ok(SizeSpec::Free(_))) {
                format!("+{h}")
            } else {
                h
            };
            assert_eq!(again.parse::<SizeSpec>(), spec, "{s:?} -> {again:?}");
        }
    }
});
