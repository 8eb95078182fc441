//! Fuzzes the line protocol parser and the CSV import rows.
//!
//! Beyond "never panics", it checks that:
//! * the owning and the reusing body parsers agree, point for point;
//! * every error has a line and a column, both 1-based;
//! * every parsed point, written back out as line protocol, parses to the
//!   same point (escapes and number formats round-trip).
#![no_main]

use std::fmt::Write;

use libfuzzer_sys::fuzz_target;
use linepilot::line_protocol::{
    for_each_point, for_each_point_ref, parse_csv_row, parse_point, FieldValue, Point, Precision,
};

/// Writes `s` with a backslash before each character `esc` accepts.
fn escaped(out: &mut String, s: &str, esc: &[char]) {
    for c in s.chars() {
        if esc.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

fn encode(p: &Point<'_>) -> String {
    let mut out = String::new();
    escaped(&mut out, &p.measurement, &[',', ' ']);
    for (k, v) in &p.tags {
        out.push(',');
        escaped(&mut out, k, &[',', '=', ' ']);
        out.push('=');
        escaped(&mut out, v, &[',', '=', ' ']);
    }
    for (i, (k, v)) in p.fields.iter().enumerate() {
        out.push(if i == 0 { ' ' } else { ',' });
        escaped(&mut out, k, &[',', '=', ' ']);
        out.push('=');
        match v {
            FieldValue::F64(x) => write!(out, "{x:?}").unwrap(),
            FieldValue::I64(x) => write!(out, "{x}i").unwrap(),
            FieldValue::U64(x) => write!(out, "{x}u").unwrap(),
            FieldValue::Bool(x) => write!(out, "{x}").unwrap(),
            FieldValue::Str(s) => {
                out.push('"');
                escaped(&mut out, s, &['"', '\\']);
                out.push('"');
            }
        }
    }
    if let Some(ts) = p.timestamp {
        write!(out, " {ts}").unwrap();
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    for precision in [Precision::Ns, Precision::S] {
        let mut owned = Vec::new();
        let r1 = for_each_point(body, precision, |p| {
            owned.push(p);
            Ok(())
        });
        let mut lent = Vec::new();
        let r2 = for_each_point_ref(body, precision, |p| {
            lent.push(p.clone());
            Ok(())
        });
        assert_eq!(r1, r2);
        assert_eq!(owned, lent);
        match &r1 {
            Ok(n) => assert_eq!(*n, owned.len()),
            Err(e) => assert!(e.line >= 1 && e.column >= 1, "{e}"),
        }
        for p in &owned {
            assert!(!p.fields.is_empty());
            let line = encode(p);
            match parse_point(&line, Precision::Ns) {
                Ok(Some(back)) => assert_eq!(&back, p, "re-encoded as {line:?}"),
                other => panic!("re-encoded {line:?} gave {other:?}"),
            }
        }
    }
    for line in body.lines() {
        let _ = parse_csv_row(line);
    }
    if !body.contains('\n') {
        let _ = parse_point(body, Precision::Ms);
    }
});
