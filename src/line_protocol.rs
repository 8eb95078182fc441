//! InfluxDB line protocol: the parser used by `POST /api/v2/write` and `linepilot import`.
//!
//! Follows the InfluxDB v2 line protocol reference:
//!
//! ```text
//! measurement[,tag_key=tag_value...] field_key=field_value[,field_key=field_value...] [timestamp]
//! ```
//!
//! * Escapes: `\,` and `\ ` in measurements; `\,`, `\=` and `\ ` in tag keys,
//!   tag values and field keys; `\"` and `\\` in string field values. A
//!   backslash before any other character is kept as it is (so `\=` in a
//!   measurement stays `\=`, as the reference says only commas and spaces
//!   are escaped there).
//! * Field values: float (`1`, `1.5`, `-1e3`, `.5`; not `inf` or `NaN`),
//!   integer (`12i`), unsigned (`12u`), boolean (`t`, `T`, `true`, `True`,
//!   `TRUE`, `f`, `F`, `false`, `False`, `FALSE`) and string (`"..."`, at most
//!   64 KiB, no raw newline).
//! * Lines end with `\n` or `\r\n`; blank lines and `#` comments are skipped;
//!   spaces before a point and after its last element are allowed.
//! * The timestamp is optional and is scaled to nanoseconds by the request's
//!   [`Precision`], with an overflow check.
//!
//! The parser works on bytes in one pass and borrows names and strings from
//! the input ([`Cow::Borrowed`]) unless they contain escapes. Columns in
//! errors are 1-based byte offsets within the line.
//!
//! The same file also parses the rows of the CSV import format
//! (`series,ts,value`, see [`parse_csv_row`]).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::UNIX_EPOCH;

use crate::domain::{Timestamp, Value, NANOS_PER_SEC};

/// The unit of the timestamps in a write request (`?precision=` in the API).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// Nanoseconds (the default).
    #[default]
    Ns,
    /// Microseconds.
    Us,
    /// Milliseconds.
    Ms,
    /// Seconds.
    S,
}

impl Precision {
    /// Nanoseconds in one unit of this precision.
    pub const fn nanos_per_unit(self) -> i64 {
        match self {
            Precision::Ns => 1,
            Precision::Us => 1_000,
            Precision::Ms => 1_000_000,
            Precision::S => NANOS_PER_SEC,
        }
    }

    /// Scales a timestamp in this precision to nanoseconds; `None` when the
    /// result does not fit in an `i64`.
    pub const fn to_nanos(self, ts: i64) -> Option<i64> {
        ts.checked_mul(self.nanos_per_unit())
    }

    /// The name used in the API (`ns`, `us`, `ms`, `s`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Precision::Ns => "ns",
            Precision::Us => "us",
            Precision::Ms => "ms",
            Precision::S => "s",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A precision name that is not `ns`, `us`, `ms` or `s`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown precision `{0}` (expected ns, us, ms or s)")]
pub struct UnknownPrecision(pub String);

impl FromStr for Precision {
    type Err = UnknownPrecision;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ns" => Ok(Precision::Ns),
            "us" => Ok(Precision::Us),
            "ms" => Ok(Precision::Ms),
            "s" => Ok(Precision::S),
            other => Err(UnknownPrecision(other.to_owned())),
        }
    }
}

/// The value of one field.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldValue<'a> {
    /// A float (`1.5`, `1`, `-1e3`).
    F64(f64),
    /// A signed integer (`12i`).
    I64(i64),
    /// An unsigned integer (`12u`).
    U64(u64),
    /// A boolean (`t`, `true`, `F` ...).
    Bool(bool),
    /// A string (`"running"`), unescaped.
    Str(Cow<'a, str>),
}

/// One parsed line: a measurement with its tags, fields and timestamp.
/// Names and strings borrow from the input unless they had escapes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Point<'a> {
    /// The measurement, unescaped.
    pub measurement: Cow<'a, str>,
    /// Tag keys and values in the order they were written, unescaped.
    pub tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// Field keys and values in the order they were written (at least one).
    pub fields: Vec<(Cow<'a, str>, FieldValue<'a>)>,
    /// The timestamp in nanoseconds, if the line had one.
    pub timestamp: Option<i64>,
}

/// A syntax error in a request body, or an error the caller's callback
/// returned for a point (reported at column 1 of its line).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// 1-based byte column within the line.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// The longest string field value accepted, in bytes (as written).
pub const MAX_STRING_LEN: usize = 64 * 1024;

/// Parses one line. Returns `Ok(None)` for a blank line or a comment, and on
/// a syntax error the 1-based column and a message. A trailing `\n` or
/// `\r\n` is allowed; more than one line is an error.
pub fn parse_point(line: &str, precision: Precision) -> Result<Option<Point<'_>>, (usize, String)> {
    let mut point = Point::default();
    if parse_point_into(line, precision, &mut point)? {
        Ok(Some(point))
    } else {
        Ok(None)
    }
}

/// Like [`parse_point`], but fills `point` (clearing it first) so that its
/// vectors are reused. Returns `Ok(false)` for a blank line or a comment.
pub fn parse_point_into<'a>(
    line: &'a str,
    precision: Precision,
    point: &mut Point<'a>,
) -> Result<bool, (usize, String)> {
    let (has_point, next) = parse_line(line, 0, precision, point)?;
    if next < line.len() {
        return Err((next, "more than one line".to_owned()));
    }
    Ok(has_point)
}

/// Parses a whole body, calling `f` with each point. Stops at the first
/// syntax error or the first error `f` returns, with its line number.
/// Returns the number of points.
pub fn for_each_point<'a>(
    body: &'a str,
    precision: Precision,
    mut f: impl FnMut(Point<'a>) -> Result<(), String>,
) -> Result<usize, LineError> {
    let mut point = Point::default();
    drive(body, precision, &mut point, |p| f(std::mem::take(p)))
}

/// Like [`for_each_point`], but lends `f` each point instead of giving it
/// away, so one set of vectors serves the whole body (the fast path for the
/// write API: no allocation per point unless a name has escapes).
pub fn for_each_point_ref<'a>(
    body: &'a str,
    precision: Precision,
    mut f: impl FnMut(&Point<'a>) -> Result<(), String>,
) -> Result<usize, LineError> {
    let mut point = Point::default();
    drive(body, precision, &mut point, |p| f(p))
}

fn drive<'a>(
    body: &'a str,
    precision: Precision,
    point: &mut Point<'a>,
    mut on_point: impl FnMut(&mut Point<'a>) -> Result<(), String>,
) -> Result<usize, LineError> {
    let mut pos = 0;
    let mut line = 1;
    let mut count = 0;
    while pos < body.len() {
        match parse_line(body, pos, precision, point) {
            Ok((has_point, next)) => {
                if has_point {
                    on_point(point).map_err(|message| LineError { line, column: 1, message })?;
                    count += 1;
                }
                pos = next;
                line += 1;
            }
            Err((column, message)) => return Err(LineError { line, column, message }),
        }
    }
    Ok(count)
}

// ---------------------------------------------------------------------------
// Byte classes

/// Control characters 0x00..=0x1F and 0x7F (includes `\t`, `\r`, `\n`).
const NONPRINT: u8 = 1;
const SPACE: u8 = 2;
const COMMA: u8 = 4;
const EQUALS: u8 = 8;
const BACKSLASH: u8 = 16;

/// Bytes that end a measurement (a backslash is looked at, not an end).
const MEASUREMENT_STOP: u8 = NONPRINT | SPACE | COMMA | BACKSLASH;
/// Characters a backslash escapes in a measurement.
const MEASUREMENT_ESC: u8 = SPACE | COMMA;
/// Bytes that end a tag key, tag value or field key.
const KEY_STOP: u8 = NONPRINT | SPACE | COMMA | EQUALS | BACKSLASH;
/// Characters a backslash escapes in a tag key, tag value or field key.
const KEY_ESC: u8 = SPACE | COMMA | EQUALS;

static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 32 {
        t[i] = NONPRINT;
        i += 1;
    }
    t[0x7F] = NONPRINT;
    t[b' ' as usize] = SPACE;
    t[b',' as usize] = COMMA;
    t[b'=' as usize] = EQUALS;
    t[b'\\' as usize] = BACKSLASH;
    t
};

#[inline(always)]
fn class(b: u8) -> u8 {
    CLASS[b as usize]
}

/// Scans a name starting at `i` up to the first byte of class `stop`
/// (escapes of class `esc` are part of the name). Returns the end and
/// whether there was an escape.
#[inline(always)]
fn scan_name(b: &[u8], i: usize, stop: u8, esc: u8) -> (usize, bool) {
    let mut escaped = false;
    let mut j = i;
    loop {
        j = find_stop(b, j, stop);
        if j >= b.len() {
            return (b.len(), escaped);
        }
        if b[j] != b'\\' {
            return (j, escaped);
        }
        match b.get(j + 1) {
            Some(&n) if class(n) & esc != 0 => {
                escaped = true;
                j += 2;
            }
            // A backslash before anything else is an ordinary character.
            _ => j += 1,
        }
    }
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte of `x` equal to `c` (exact for the lowest
/// match; bytes above it may be flagged falsely, which is fine for a
/// first-match search).
#[inline(always)]
fn bytes_eq(x: u64, c: u8) -> u64 {
    let y = x ^ (LO * u64::from(c));
    y.wrapping_sub(LO) & !y & HI
}

/// The first byte at or after `j` of class `stop` (or `b.len()`), eight
/// bytes at a time. `stop` is `MEASUREMENT_STOP` or `KEY_STOP`.
#[inline(always)]
fn find_stop(b: &[u8], mut j: usize, stop: u8) -> usize {
    while let Some(word) = b.get(j..j + 8) {
        let Ok(bytes) = <[u8; 8]>::try_from(word) else {
            break;
        };
        let x = u64::from_le_bytes(bytes);
        // Control characters (< 0x20) and DEL, space, comma, backslash, and
        // for keys the equals sign.
        let mut m = (x.wrapping_sub(LO * 0x20) & !x & HI)
            | bytes_eq(x, 0x7F)
            | bytes_eq(x, b' ')
            | bytes_eq(x, b',')
            | bytes_eq(x, b'\\');
        if stop & EQUALS != 0 {
            m |= bytes_eq(x, b'=');
        }
        if m != 0 {
            return j + (m.trailing_zeros() / 8) as usize;
        }
        j += 8;
    }
    while let Some(&c) = b.get(j) {
        if class(c) & stop != 0 {
            break;
        }
        j += 1;
    }
    j
}

/// Removes the backslashes of escapes of class `esc` (the same rule as
/// [`scan_name`]).
fn unescape_name(s: &str, esc: u8) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut seg = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if let Some(&n) = b.get(i + 1) {
                if class(n) & esc != 0 {
                    out.push_str(&s[seg..i]);
                    seg = i + 1;
                    i += 2;
                    continue;
                }
            }
        }
        i += 1;
    }
    out.push_str(&s[seg..]);
    out
}

#[inline(always)]
fn name<'a>(src: &'a str, start: usize, end: usize, escaped: bool, esc: u8) -> Cow<'a, str> {
    let s = &src[start..end];
    if escaped {
        Cow::Owned(unescape_name(s, esc))
    } else {
        Cow::Borrowed(s)
    }
}

/// If `i` is at the end of a line, the start of the next one.
#[inline(always)]
fn at_eol(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i) {
        None => Some(b.len()),
        Some(b'\n') => Some(i + 1),
        Some(b'\r') => match b.get(i + 1) {
            None => Some(b.len()),
            Some(b'\n') => Some(i + 2),
            Some(_) => None,
        },
        Some(_) => None,
    }
}

#[inline(always)]
fn skip_spaces(b: &[u8], mut i: usize) -> usize {
    while b.get(i) == Some(&b' ') {
        i += 1;
    }
    i
}

/// A short, printable rendering of (part of) the input for messages.
fn snippet(s: &str) -> String {
    const MAX: usize = 40;
    if s.len() <= MAX {
        return format!("{s:?}");
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}...", &s[..end])
}

fn describe(b: &[u8], src: &str, i: usize) -> String {
    match b.get(i) {
        None | Some(b'\n') => "end of line".to_owned(),
        Some(b'\r') if at_eol(b, i).is_some() => "end of line".to_owned(),
        Some(_) => {
            let c = src[i..].chars().next().unwrap_or(' ');
            format!("{c:?}")
        }
    }
}

// ---------------------------------------------------------------------------
// One line

/// Parses the line that starts at byte `start` of `src` into `p`. Returns
/// whether it held a point and where the next line starts; on error the
/// column (1-based, relative to `start`) and a message.
fn parse_line<'a>(
    src: &'a str,
    start: usize,
    precision: Precision,
    p: &mut Point<'a>,
) -> Result<(bool, usize), (usize, String)> {
    let b = src.as_bytes();
    let col = |i: usize| i - start + 1;
    let err = |i: usize, msg: String| Err((i - start + 1, msg));

    // Blank lines, comments, leading spaces.
    let mut i = skip_spaces(b, start);
    if let Some(next) = at_eol(b, i) {
        return Ok((false, next));
    }
    if b[i] == b'#' {
        let next = match b[i..].iter().position(|&c| c == b'\n') {
            Some(k) => i + k + 1,
            None => b.len(),
        };
        return Ok((false, next));
    }

    p.tags.clear();
    p.fields.clear();
    p.timestamp = None;

    // Measurement.
    let (end, escaped) = scan_name(b, i, MEASUREMENT_STOP, MEASUREMENT_ESC);
    if end == i {
        return err(i, format!("expected measurement, found {}", describe(b, src, i)));
    }
    p.measurement = name(src, i, end, escaped, MEASUREMENT_ESC);
    i = end;

    // Tag set.
    while b.get(i) == Some(&b',') {
        i += 1;
        let (kend, escaped) = scan_name(b, i, KEY_STOP, KEY_ESC);
        if kend == i {
            return err(i, format!("expected tag key, found {}", describe(b, src, i)));
        }
        if b.get(kend) != Some(&b'=') {
            return err(
                kend,
                format!("expected '=' after tag key {}, found {}", snippet(&src[i..kend]), describe(b, src, kend)),
            );
        }
        let key = name(src, i, kend, escaped, KEY_ESC);
        let vstart = kend + 1;
        let (vend, escaped) = scan_name(b, vstart, KEY_STOP, KEY_ESC);
        if vend == vstart {
            return err(
                vstart,
                format!("expected tag value after {}=, found {}", snippet(&key), describe(b, src, vstart)),
            );
        }
        p.tags.push((key, name(src, vstart, vend, escaped, KEY_ESC)));
        i = vend;
    }

    // Separator before the field set.
    match b.get(i) {
        Some(b' ') => i = skip_spaces(b, i),
        _ if at_eol(b, i).is_some() => return err(i, "missing field set".to_owned()),
        _ => return err(i, format!("unexpected {} in measurement or tag set", describe(b, src, i))),
    }
    if at_eol(b, i).is_some() {
        return err(i, "missing field set".to_owned());
    }

    // Field set. The key is parsed with the same steps as a tag key above,
    // written out on purpose: a shared helper measured 12 % slower on the
    // write path (A/B with `cargo bench --bench line_protocol`).
    loop {
        let (kend, escaped) = scan_name(b, i, KEY_STOP, KEY_ESC);
        if kend == i {
            return err(i, format!("expected field key, found {}", describe(b, src, i)));
        }
        if b.get(kend) != Some(&b'=') {
            return err(
                kend,
                format!("expected '=' after field key {}, found {}", snippet(&src[i..kend]), describe(b, src, kend)),
            );
        }
        let key = name(src, i, kend, escaped, KEY_ESC);
        let vstart = kend + 1;
        let (value, vend) =
            parse_field_value(src, vstart).map_err(|(at, msg)| (col(at), format!("field {}: {msg}", snippet(&key))))?;
        p.fields.push((key, value));
        i = vend;
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b' ') => break,
            _ if at_eol(b, i).is_some() => break,
            _ => return err(i, format!("unexpected {} after field value", describe(b, src, i))),
        }
    }

    // Timestamp.
    i = skip_spaces(b, i);
    if let Some(next) = at_eol(b, i) {
        return Ok((true, next));
    }
    let tstart = i;
    let neg = b.get(i) == Some(&b'-');
    let dstart = i + usize::from(neg);
    let mut k = dstart;
    let mut v: u64 = 0;
    while let Some(&c) = b.get(k) {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        v = v.wrapping_mul(10).wrapping_add(u64::from(d));
        k += 1;
    }
    // At most 19 digits cannot overflow the u64.
    let fast = if (1..=19).contains(&(k - dstart)) && matches!(b.get(k), None | Some(b' ' | b'\n' | b'\r')) {
        if neg {
            0i64.checked_sub_unsigned(v)
        } else {
            i64::try_from(v).ok()
        }
    } else {
        None
    };
    let ts = if let Some(ts) = fast {
        i = k;
        ts
    } else {
        while let Some(&c) = b.get(i) {
            if c == b' ' || c == b'\n' || c == b'\r' {
                break;
            }
            i += 1;
        }
        let ttext = &src[tstart..i];
        match parse_int(ttext.as_bytes()) {
            Ok(ts) => ts,
            Err(IntError::Syntax) => return err(tstart, format!("invalid timestamp {}", snippet(ttext))),
            Err(IntError::Range) => return err(tstart, format!("timestamp {} out of range", snippet(ttext))),
        }
    };
    match precision.to_nanos(ts) {
        Some(ns) => p.timestamp = Some(ns),
        None => {
            return err(tstart, format!("timestamp {} in {precision} is out of range in nanoseconds", &src[tstart..i]))
        }
    }
    i = skip_spaces(b, i);
    match at_eol(b, i) {
        Some(next) => Ok((true, next)),
        None => {
            let rest_end = b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |k| i + k);
            err(i, format!("unexpected text after timestamp: {}", snippet(src[i..rest_end].trim_end_matches('\r'))))
        }
    }
}

// ---------------------------------------------------------------------------
// Field values

/// Parses the field value at `i`; returns it and the index after it, or the
/// absolute index of the error and a message.
#[inline(always)]
fn parse_field_value(src: &str, i: usize) -> Result<(FieldValue<'_>, usize), (usize, String)> {
    let b = src.as_bytes();
    match b.get(i) {
        Some(b'"') => parse_string(src, i),
        Some(b'-' | b'0'..=b'9' | b'.') => parse_number(src, i),
        Some(b't' | b'T' | b'f' | b'F') => {
            let end = value_end(b, i);
            let value = match &b[i..end] {
                b"t" | b"T" | b"true" | b"True" | b"TRUE" => true,
                b"f" | b"F" | b"false" | b"False" | b"FALSE" => false,
                _ => return Err((i, format!("invalid boolean {}", snippet(&src[i..end])))),
            };
            Ok((FieldValue::Bool(value), end))
        }
        _ if at_eol(b, i).is_some() => Err((i, "missing value".to_owned())),
        _ => Err((
            i,
            format!("invalid value starting with {} (expected number, boolean or \"string\")", describe(b, src, i)),
        )),
    }
}

/// Whether `k` is where an unquoted field value ends.
#[inline(always)]
fn is_value_end(b: &[u8], k: usize) -> bool {
    matches!(b.get(k), None | Some(b',' | b' ' | b'\n' | b'\r'))
}

/// A number field value at `i` (which holds `-`, a digit or `.`). Short
/// integers, unsigned integers and plain decimals (at most 15 digits, no
/// exponent) are converted in one pass, exactly; everything else goes
/// through [`parse_number_slow`].
#[inline(always)]
fn parse_number(src: &str, i: usize) -> Result<(FieldValue<'_>, usize), (usize, String)> {
    let b = src.as_bytes();
    let neg = b.get(i) == Some(&b'-');
    let dstart = i + usize::from(neg);
    let mut k = dstart;
    let mut mant: u64 = 0;
    while let Some(&c) = b.get(k) {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        mant = mant.wrapping_mul(10).wrapping_add(u64::from(d));
        k += 1;
    }
    let int_digits = k - dstart;
    match b.get(k) {
        Some(b'i') if (1..=18).contains(&int_digits) && is_value_end(b, k + 1) => {
            // < 10^18 fits an i64 either way round.
            let v = mant as i64;
            return Ok((FieldValue::I64(if neg { -v } else { v }), k + 1));
        }
        Some(b'u') if !neg && (1..=19).contains(&int_digits) && is_value_end(b, k + 1) => {
            return Ok((FieldValue::U64(mant), k + 1));
        }
        _ => {}
    }
    let mut frac_digits = 0;
    if b.get(k) == Some(&b'.') {
        k += 1;
        let fstart = k;
        while let Some(&c) = b.get(k) {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            mant = mant.wrapping_mul(10).wrapping_add(u64::from(d));
            k += 1;
        }
        frac_digits = k - fstart;
    }
    let digits = int_digits + frac_digits;
    if (1..=15).contains(&digits) && is_value_end(b, k) {
        // mant < 10^15 < 2^53 and 10^frac_digits are exact, so one division
        // is correctly rounded.
        let m = mant as f64;
        let v = if frac_digits == 0 { m } else { m / POW10[frac_digits] };
        return Ok((FieldValue::F64(if neg { -v } else { v }), k));
    }
    parse_number_slow(src, i)
}

/// The general number path: exponents, long mantissas, range checks and
/// every error.
#[cold]
fn parse_number_slow(src: &str, i: usize) -> Result<(FieldValue<'_>, usize), (usize, String)> {
    let b = src.as_bytes();
    let end = value_end(b, i);
    let tok = &src[i..end];
    let tb = tok.as_bytes();
    let value = match tb.last() {
        Some(b'i') => match parse_int(&tb[..tb.len() - 1]) {
            Ok(v) => FieldValue::I64(v),
            Err(IntError::Syntax) => return Err((i, format!("invalid integer {}", snippet(tok)))),
            Err(IntError::Range) => return Err((i, format!("integer {} out of range", snippet(tok)))),
        },
        Some(b'u') => match parse_uint(&tb[..tb.len() - 1]) {
            Ok(v) => FieldValue::U64(v),
            Err(IntError::Syntax) => return Err((i, format!("invalid unsigned integer {}", snippet(tok)))),
            Err(IntError::Range) => return Err((i, format!("unsigned integer {} out of range", snippet(tok)))),
        },
        _ => match parse_float(tok) {
            Ok(v) => FieldValue::F64(v),
            Err(IntError::Syntax) => return Err((i, format!("invalid number {}", snippet(tok)))),
            Err(IntError::Range) => return Err((i, format!("float {} out of range", snippet(tok)))),
        },
    };
    Ok((value, end))
}

/// The end of an unquoted field value: the next comma, space or line end.
#[inline(always)]
fn value_end(b: &[u8], mut i: usize) -> usize {
    while let Some(&c) = b.get(i) {
        if c == b',' || c == b' ' || c == b'\n' || c == b'\r' {
            break;
        }
        i += 1;
    }
    i
}

fn parse_string(src: &str, open: usize) -> Result<(FieldValue<'_>, usize), (usize, String)> {
    let b = src.as_bytes();
    let start = open + 1;
    let mut i = start;
    let mut escaped = false;
    loop {
        match b.get(i) {
            None | Some(b'\n') => return Err((open, "unterminated string (missing closing '\"')".to_owned())),
            Some(b'"') => break,
            Some(b'\\') => match b.get(i + 1) {
                Some(b'"' | b'\\') => {
                    escaped = true;
                    i += 2;
                }
                _ => i += 1,
            },
            Some(_) => i += 1,
        }
    }
    if i - start > MAX_STRING_LEN {
        return Err((open, format!("string longer than {MAX_STRING_LEN} bytes")));
    }
    let s = &src[start..i];
    let value = if escaped {
        let sb = s.as_bytes();
        let mut out = String::with_capacity(s.len());
        let mut seg = 0;
        let mut k = 0;
        while k < sb.len() {
            if sb[k] == b'\\' && matches!(sb.get(k + 1), Some(b'"' | b'\\')) {
                out.push_str(&s[seg..k]);
                seg = k + 1;
                k += 2;
            } else {
                k += 1;
            }
        }
        out.push_str(&s[seg..]);
        Cow::Owned(out)
    } else {
        Cow::Borrowed(s)
    };
    Ok((FieldValue::Str(value), i + 1))
}

#[derive(Debug, PartialEq, Eq)]
enum IntError {
    Syntax,
    Range,
}

/// `[-]digits` as an `i64`.
#[inline(always)]
fn parse_int(t: &[u8]) -> Result<i64, IntError> {
    let (neg, digits) = match t.first() {
        Some(b'-') => (true, &t[1..]),
        _ => (false, t),
    };
    let v = parse_uint(digits)?;
    if neg {
        0i64.checked_sub_unsigned(v).ok_or(IntError::Range)
    } else {
        i64::try_from(v).map_err(|_| IntError::Range)
    }
}

/// `digits` as a `u64`.
#[inline(always)]
fn parse_uint(t: &[u8]) -> Result<u64, IntError> {
    if t.is_empty() {
        return Err(IntError::Syntax);
    }
    if t.len() <= 19 {
        // At most 9_999_999_999_999_999_999: no overflow possible.
        let mut v: u64 = 0;
        for &c in t {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                return Err(IntError::Syntax);
            }
            v = v * 10 + u64::from(d);
        }
        return Ok(v);
    }
    let mut v: u64 = 0;
    let mut overflow = false;
    for &c in t {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return Err(IntError::Syntax);
        }
        match v.checked_mul(10).and_then(|x| x.checked_add(u64::from(d))) {
            Some(x) => v = x,
            // Keep checking the syntax: `99999999999999999999x` is a syntax error.
            None => overflow = true,
        }
    }
    if overflow {
        Err(IntError::Range)
    } else {
        Ok(v)
    }
}

/// Powers of ten that an `f64` holds exactly.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
    1e21, 1e22,
];

/// A float as the grammar has it:
/// `[-] ( digits [ "." [digits] ] [exp] | "." digits [exp] )`,
/// `exp = ("e"|"E") ["+"|"-"] digits`. Short decimals take the exact
/// fast path (mantissa < 2^53, power of ten <= 22); the rest go to the
/// standard library's correctly rounded parser.
#[inline(always)]
fn parse_float(tok: &str) -> Result<f64, IntError> {
    let t = tok.as_bytes();
    let mut k = 0;
    let neg = t.first() == Some(&b'-');
    if neg {
        k = 1;
    }
    let mut mant: u64 = 0;
    let mut exact = true; // mantissa fits without loss
    let mut exp10: i64 = 0;
    let mut digits = 0;
    while let Some(&c) = t.get(k) {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        if mant < 100_000_000_000_000_000 {
            mant = mant * 10 + u64::from(d);
        } else {
            exact = false;
        }
        digits += 1;
        k += 1;
    }
    if t.get(k) == Some(&b'.') {
        k += 1;
        while let Some(&c) = t.get(k) {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            if mant < 100_000_000_000_000_000 {
                mant = mant * 10 + u64::from(d);
                exp10 -= 1;
            } else {
                exact = false;
            }
            digits += 1;
            k += 1;
        }
    }
    if digits == 0 {
        return Err(IntError::Syntax);
    }
    if matches!(t.get(k), Some(b'e' | b'E')) {
        k += 1;
        let eneg = match t.get(k) {
            Some(b'-') => {
                k += 1;
                true
            }
            Some(b'+') => {
                k += 1;
                false
            }
            _ => false,
        };
        let estart = k;
        let mut e: i64 = 0;
        while let Some(&c) = t.get(k) {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            if e < 1_000_000 {
                e = e * 10 + i64::from(d);
            }
            k += 1;
        }
        if k == estart {
            return Err(IntError::Syntax);
        }
        exp10 += if eneg { -e } else { e };
    }
    if k != t.len() {
        return Err(IntError::Syntax);
    }
    let v = if exact && mant < (1u64 << 53) && (-22..=22).contains(&exp10) {
        let m = mant as f64;
        let v = if exp10 >= 0 { m * POW10[exp10 as usize] } else { m / POW10[(-exp10) as usize] };
        if neg {
            -v
        } else {
            v
        }
    } else {
        // The grammar above is a subset of what `f64::from_str` accepts.
        tok.parse::<f64>().map_err(|_| IntError::Syntax)?
    };
    if v.is_finite() {
        Ok(v)
    } else {
        Err(IntError::Range)
    }
}

// ---------------------------------------------------------------------------
// CSV import rows

/// One row of the CSV import format `series,ts,value`.
#[derive(Clone, Debug, PartialEq)]
pub struct CsvRow<'a> {
    /// The series name (`filler.bowl_pressure`), unquoted.
    pub series: Cow<'a, str>,
    /// The timestamp in nanoseconds.
    pub ts: Timestamp,
    /// The value: a number (integer when written without `.` or exponent
    /// and in `i64` range), `true`/`false`, or a quoted string.
    pub value: Value,
}

/// Parses one row of the CSV import format `series,ts,value`:
///
/// * `ts` is RFC 3339 (`2024-11-28T08:00:00Z`, `2024-11-28 08:00:00.5`,
///   `2024-11-28T16:00:00+08:00`; no zone means UTC) or Unix seconds with an
///   optional fraction of up to 9 digits (`1732780800.25`);
/// * `value` is a number, `true`/`false` (any case) or a `"quoted string"`
///   (`""` inside is one quote); fields may be quoted as in RFC 4180 and
///   spaces around unquoted fields are ignored.
///
/// Returns `Ok(None)` for a blank line or the header line (`series,ts,...`),
/// and on error the 1-based column and a message.
pub fn parse_csv_row(line: &str) -> Result<Option<CsvRow<'_>>, (usize, String)> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.trim().is_empty() {
        return Ok(None);
    }
    let mut fields: Vec<CsvField<'_>> = Vec::with_capacity(3);
    let mut i = 0;
    loop {
        let (field, next) = csv_field(line, i)?;
        fields.push(field);
        match next {
            Some(n) => i = n,
            None => break,
        }
        if fields.len() == 3 {
            return Err((i + 1, "too many columns (expected series,ts,value)".to_owned()));
        }
    }
    if fields.len() < 3 {
        return Err((line.len() + 1, format!("expected 3 columns (series,ts,value), found {}", fields.len())));
    }
    let (series, ts, value) = (&fields[0], &fields[1], &fields[2]);
    if !series.quoted
        && series.text.eq_ignore_ascii_case("series")
        && !ts.quoted
        && ["ts", "time", "timestamp"].iter().any(|h| ts.text.eq_ignore_ascii_case(h))
    {
        return Ok(None);
    }
    if series.text.is_empty() {
        return Err((series.column, "empty series name".to_owned()));
    }
    if ts.quoted {
        return Err((ts.column, "timestamp must not be quoted".to_owned()));
    }
    let ts_ns = parse_csv_ts(&ts.text).map_err(|m| (ts.column, m))?;
    let value = if value.quoted {
        Value::Str(value.text.clone().into_owned())
    } else {
        parse_csv_value(&value.text).map_err(|m| (value.column, m))?
    };
    let series = match &fields[0].text {
        Cow::Borrowed(s) => Cow::Borrowed(*s),
        Cow::Owned(s) => Cow::Owned(s.clone()),
    };
    Ok(Some(CsvRow { series, ts: ts_ns, value }))
}

struct CsvField<'a> {
    text: Cow<'a, str>,
    quoted: bool,
    column: usize,
}

/// Reads the field at `i`; returns it and the start of the next field (if
/// a comma follows).
fn csv_field(line: &str, i: usize) -> Result<(CsvField<'_>, Option<usize>), (usize, String)> {
    let b = line.as_bytes();
    let mut k = i;
    while b.get(k) == Some(&b' ') {
        k += 1;
    }
    if b.get(k) == Some(&b'"') {
        let open = k;
        let mut text = String::new();
        let mut seg = k + 1;
        k += 1;
        loop {
            match b.get(k) {
                None => return Err((open + 1, "unterminated quoted field".to_owned())),
                Some(b'"') if b.get(k + 1) == Some(&b'"') => {
                    text.push_str(&line[seg..=k]);
                    k += 2;
                    seg = k;
                }
                Some(b'"') => break,
                Some(_) => k += 1,
            }
        }
        let text = if text.is_empty() {
            Cow::Borrowed(&line[seg..k])
        } else {
            text.push_str(&line[seg..k]);
            Cow::Owned(text)
        };
        k += 1;
        while b.get(k) == Some(&b' ') {
            k += 1;
        }
        let next = match b.get(k) {
            None => None,
            Some(b',') => Some(k + 1),
            Some(_) => {
                return Err((k + 1, "unexpected text after closing quote".to_owned()));
            }
        };
        Ok((CsvField { text, quoted: true, column: open + 1 }, next))
    } else {
        let end = b[i..].iter().position(|&c| c == b',').map(|p| i + p);
        let raw = &line[i..end.unwrap_or(line.len())];
        Ok((CsvField { text: Cow::Borrowed(raw.trim_matches(' ')), quoted: false, column: k + 1 }, end.map(|e| e + 1)))
    }
}

fn parse_csv_value(s: &str) -> Result<Value, String> {
    if s.is_empty() {
        return Err("missing value".to_owned());
    }
    if s.eq_ignore_ascii_case("true") {
        return Ok(Value::Bool(true));
    }
    if s.eq_ignore_ascii_case("false") {
        return Ok(Value::Bool(false));
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()) {
        if let Ok(v) = s.parse::<i64>() {
            return Ok(Value::I64(v));
        }
    }
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(Value::F64(v)),
        _ => Err(format!("invalid value {} (expected a number, true/false or a \"quoted string\")", snippet(s))),
    }
}

/// RFC 3339 or Unix seconds with an optional fraction, to nanoseconds.
fn parse_csv_ts(s: &str) -> Result<Timestamp, String> {
    if s.is_empty() {
        return Err("missing timestamp".to_owned());
    }
    let numeric = s.strip_prefix('-').unwrap_or(s).bytes().all(|c| c.is_ascii_digit() || c == b'.');
    if numeric {
        return parse_unix_seconds(s)
            .ok_or_else(|| format!("invalid Unix timestamp {} (seconds[.fraction])", snippet(s)));
    }
    // humantime knows only `Z`/no zone; take a numeric offset off first.
    let b = s.as_bytes();
    let n = b.len();
    let (base, offset_s) = if n > 19 && matches!(b[n - 6], b'+' | b'-') && b[n - 3] == b':' {
        let hh = two_digits(&b[n - 5..n - 3]);
        let mm = two_digits(&b[n - 2..]);
        match (hh, mm) {
            (Some(h), Some(m)) if h < 24 && m < 60 => {
                let off = i64::from(h) * 3600 + i64::from(m) * 60;
                (&s[..n - 6], if b[n - 6] == b'-' { -off } else { off })
            }
            _ => return Err(format!("invalid time zone offset in {}", snippet(s))),
        }
    } else {
        (s, 0)
    };
    let t =
        humantime::parse_rfc3339_weak(base).map_err(|e| format!("invalid RFC 3339 timestamp {}: {e}", snippet(s)))?;
    let d = t.duration_since(UNIX_EPOCH).map_err(|_| format!("timestamp {} is before 1970", snippet(s)))?;
    i64::try_from(d.as_nanos())
        .ok()
        .and_then(|ns| ns.checked_sub(offset_s * NANOS_PER_SEC))
        .ok_or_else(|| format!("timestamp {} out of range", snippet(s)))
}

fn two_digits(b: &[u8]) -> Option<u8> {
    match b {
        [a @ b'0'..=b'9', c @ b'0'..=b'9'] => Some((a - b'0') * 10 + (c - b'0')),
        _ => None,
    }
}

/// `[-]seconds[.fraction]` with at most 9 fraction digits, exactly.
fn parse_unix_seconds(s: &str) -> Option<i64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, f),
        None => (body, ""),
    };
    if int.is_empty() || frac.len() > 9 || body.ends_with('.') {
        return None;
    }
    let secs = i64::try_from(parse_uint(int.as_bytes()).ok()?).ok()?;
    let mut nanos: i64 = 0;
    if !frac.is_empty() {
        let f = i64::try_from(parse_uint(frac.as_bytes()).ok()?).ok()?;
        nanos = f * 10i64.pow(9 - frac.len() as u32);
    }
    let total = secs.checked_mul(NANOS_PER_SEC)?.checked_add(nanos)?;
    Some(if neg { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Point<'_> {
        match parse_point(line, Precision::Ns) {
            Ok(Some(p)) => p,
            other => panic!("{line:?}: expected a point, got {other:?}"),
        }
    }

    fn fail(line: &str) -> (usize, String) {
        match parse_point(line, Precision::Ns) {
            Err(e) => e,
            Ok(p) => panic!("{line:?}: expected an error, got {p:?}"),
        }
    }

    fn field<'a>(p: &'a Point<'_>, key: &str) -> &'a FieldValue<'a> {
        &p.fields.iter().find(|(k, _)| k == key).unwrap_or_else(|| panic!("no field {key}")).1
    }

    fn value(v: &str) -> FieldValue<'static> {
        let line = format!("m v={v}");
        match parse_point(&line, Precision::Ns) {
            Ok(Some(mut p)) => match p.fields.pop() {
                Some((_, FieldValue::Str(s))) => FieldValue::Str(Cow::Owned(s.into_owned())),
                Some((_, FieldValue::F64(x))) => FieldValue::F64(x),
                Some((_, FieldValue::I64(x))) => FieldValue::I64(x),
                Some((_, FieldValue::U64(x))) => FieldValue::U64(x),
                Some((_, FieldValue::Bool(x))) => FieldValue::Bool(x),
                None => panic!("no field"),
            },
            other => panic!("{v:?}: {other:?}"),
        }
    }

    fn value_err(v: &str) -> (usize, String) {
        fail(&format!("m v={v}"))
    }

    #[test]
    fn spec_examples() {
        let p = one(r#"myMeasurement,tag1=value1,tag2=value2 fieldKey="fieldValue" 1556813561098000000"#);
        assert_eq!(p.measurement, "myMeasurement");
        assert_eq!(
            p.tags,
            vec![(Cow::Borrowed("tag1"), Cow::Borrowed("value1")), (Cow::Borrowed("tag2"), Cow::Borrowed("value2"))]
        );
        assert_eq!(p.fields, vec![(Cow::Borrowed("fieldKey"), FieldValue::Str("fieldValue".into()))]);
        assert_eq!(p.timestamp, Some(1_556_813_561_098_000_000));

        let p = one(r#"myMeasurement,tag1=val1,tag2=val2 field1="v1",field2=1i 0000000000000000000"#);
        assert_eq!(field(&p, "field1"), &FieldValue::Str("v1".into()));
        assert_eq!(field(&p, "field2"), &FieldValue::I64(1));
        assert_eq!(p.timestamp, Some(0));

        // The home sensor example, in seconds.
        let p =
            parse_point(r"home,room=Living\ Room temp=21.1,hum=35.9,co=0i 1641024000", Precision::S).unwrap().unwrap();
        assert_eq!(p.tags[0].1, "Living Room");
        assert_eq!(field(&p, "temp"), &FieldValue::F64(21.1));
        assert_eq!(field(&p, "hum"), &FieldValue::F64(35.9));
        assert_eq!(field(&p, "co"), &FieldValue::I64(0));
        assert_eq!(p.timestamp, Some(1_641_024_000 * NANOS_PER_SEC));

        // No tags, no timestamp.
        let p = one("cpu value=1");
        assert!(p.tags.is_empty());
        assert_eq!(p.timestamp, None);
    }

    #[test]
    fn names_without_escapes_are_borrowed() {
        let p = one(r#"line1,asset=filler bowl_pressure=3.2,state="run" 1"#);
        assert!(matches!(p.measurement, Cow::Borrowed(_)));
        assert!(matches!(p.tags[0].0, Cow::Borrowed(_)));
        assert!(matches!(p.tags[0].1, Cow::Borrowed(_)));
        assert!(matches!(p.fields[0].0, Cow::Borrowed(_)));
        assert!(matches!(&p.fields[1].1, FieldValue::Str(Cow::Borrowed(_))));
    }

    #[test]
    fn every_escape() {
        // Measurement: comma and space; `\=` is not an escape there.
        let p = one(r"my\,meas\ ure\=x v=1");
        assert_eq!(p.measurement, r"my,meas ure\=x");
        assert!(matches!(p.measurement, Cow::Owned(_)));
        // A measurement may hold a plain `=` and quotes.
        assert_eq!(one(r#"a=b"c' v=1"#).measurement, r#"a=b"c'"#);
        // Tag keys and values: comma, equals, space.
        let p = one(r"m,tag\ key\,x\=y=val\ ue\,\=z v=1");
        assert_eq!(p.tags[0].0, "tag key,x=y");
        assert_eq!(p.tags[0].1, "val ue,=z");
        // Field keys.
        let p = one(r"m f\ k\=\,=1");
        assert_eq!(p.fields[0].0, "f k=,");
        // Backslash before anything else stays; `\\` then an escape.
        let p = one(r"m\x,t=a\b,u=c\\,d v=1");
        assert_eq!(p.measurement, r"m\x");
        assert_eq!(p.tags[0].1, r"a\b");
        assert_eq!(p.tags[1].1, r"c\,d");
        // String field values: `\"` and `\\`; other backslashes stay.
        let p = one(r#"m s="a \"quoted\" \\ back\slash \n""#);
        assert_eq!(field(&p, "s"), &FieldValue::Str(r#"a "quoted" \ back\slash \n"#.into()));
        // A string may hold commas, spaces, equals and unicode.
        let p = one(r#"m s="x, y = z °C 温度",n=1 5"#);
        assert_eq!(field(&p, "s"), &FieldValue::Str("x, y = z °C 温度".into()));
        assert_eq!(field(&p, "n"), &FieldValue::F64(1.0));
        assert_eq!(p.timestamp, Some(5));
        // Unicode names.
        assert_eq!(one("温度,站=一 值=1").tags[0].1, "一");
    }

    #[test]
    fn word_scan_matches_byte_scan() {
        let alphabet: &[u8] = b"ab_9 ,=\\\t\x7f\x1f\xc3\xa9~\x80\xff";
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..20_000 {
            let len = rng.usize(0..40);
            let b: Vec<u8> = (0..len).map(|_| alphabet[rng.usize(..alphabet.len())]).collect();
            let start = rng.usize(0..=len);
            for stop in [MEASUREMENT_STOP, KEY_STOP] {
                let naive = b[start..].iter().position(|&c| class(c) & stop != 0).map_or(len, |k| start + k);
                assert_eq!(find_stop(&b, start, stop), naive, "{b:?} from {start}");
            }
        }
    }

    #[test]
    fn float_values() {
        for (text, want) in [
            ("1", 1.0),
            ("1.5", 1.5),
            ("-1e3", -1000.0),
            ("1E+2", 100.0),
            ("2.5e-3", 0.0025),
            (".5", 0.5),
            ("-.5", -0.5),
            ("1.", 1.0),
            ("0", 0.0),
            ("3.214", 3.214),
            ("-0.000001234", -0.000001234),
            ("123456789012345678901234567890", 123456789012345678901234567890.0),
            ("1.7976931348623157e308", f64::MAX),
            ("4.9e-324", 4.9e-324),
            ("0.1", 0.1),
            ("9007199254740993", 9007199254740993.0),
        ] {
            assert_eq!(value(text), FieldValue::F64(want), "{text}");
        }
        // Exact: the fast path and the standard parser agree.
        for text in ["0.3", "123.456", "1e22", "1e23", "8.589973e9", "2.2250738585072014e-308"] {
            assert_eq!(value(text), FieldValue::F64(text.parse().unwrap()), "{text}");
        }
    }

    #[test]
    fn invalid_floats() {
        for text in
            ["inf", "NaN", "+1", "1e", "1.2.3", "--1", "-", ".", "1_000", "1e+", "0x10", "1x5", "e5", "1ee5", "1.5x"]
        {
            let (col, msg) = value_err(text);
            assert_eq!(col, 5, "{text}: {msg}");
        }
        let (col, msg) = value_err("1e400");
        assert_eq!(col, 5);
        assert!(msg.contains("out of range"), "{msg}");
        let (_, msg) = value_err("inf");
        assert!(msg.contains("invalid value"), "{msg}");
    }

    #[test]
    fn numbers_agree_with_the_standard_parsers() {
        let mut rng = fastrand::Rng::with_seed(42);
        for _ in 0..20_000 {
            let int_len = rng.usize(0..22);
            let frac_len = rng.usize(0..22);
            let mut t = String::new();
            if rng.bool() {
                t.push('-');
            }
            for _ in 0..int_len {
                t.push(char::from(b'0' + rng.u8(0..10)));
            }
            if frac_len > 0 || int_len == 0 {
                t.push('.');
                for _ in 0..frac_len.max(1) {
                    t.push(char::from(b'0' + rng.u8(0..10)));
                }
            }
            if rng.u8(0..4) == 0 {
                t.push_str(&format!("e{}", rng.i32(-30..30)));
            }
            let want: f64 = t.parse().unwrap();
            assert_eq!(value(&t), FieldValue::F64(want), "{t}");

            let digits: String = t.chars().filter(char::is_ascii_digit).take(21).collect();
            if !digits.is_empty() {
                let neg = rng.bool();
                let it = format!("{}{digits}i", if neg { "-" } else { "" });
                match format!("{}{digits}", if neg { "-" } else { "" }).parse::<i64>() {
                    Ok(v) => assert_eq!(value(&it), FieldValue::I64(v), "{it}"),
                    Err(_) => assert!(value_err(&it).1.contains("out of range"), "{it}"),
                }
                let ut = format!("{digits}u");
                match digits.parse::<u64>() {
                    Ok(v) => assert_eq!(value(&ut), FieldValue::U64(v), "{ut}"),
                    Err(_) => assert!(value_err(&ut).1.contains("out of range"), "{ut}"),
                }
            }
        }
    }

    #[test]
    fn integer_and_unsigned_values() {
        assert_eq!(value("12i"), FieldValue::I64(12));
        assert_eq!(value("-12i"), FieldValue::I64(-12));
        assert_eq!(value("0i"), FieldValue::I64(0));
        assert_eq!(value("9223372036854775807i"), FieldValue::I64(i64::MAX));
        assert_eq!(value("-9223372036854775808i"), FieldValue::I64(i64::MIN));
        assert_eq!(value("12u"), FieldValue::U64(12));
        assert_eq!(value("18446744073709551615u"), FieldValue::U64(u64::MAX));
        for bad in ["9223372036854775808i", "-9223372036854775809i", "18446744073709551616u"] {
            let (col, msg) = value_err(bad);
            assert_eq!(col, 5);
            assert!(msg.contains("out of range"), "{bad}: {msg}");
        }
        for bad in ["1.5i", "-i", "1e3i", "-1u", "1.0u", "12iu", "1 2i"] {
            let (col, msg) = value_err(bad);
            assert!(col >= 5, "{bad}: {col} {msg}");
        }
        assert_eq!(value_err("1.5i").0, 5);
        assert_eq!(value_err("-1u").0, 5);
        assert_eq!(value_err("i").0, 5);
    }

    #[test]
    fn boolean_values() {
        for t in ["t", "T", "true", "True", "TRUE"] {
            assert_eq!(value(t), FieldValue::Bool(true), "{t}");
        }
        for f in ["f", "F", "false", "False", "FALSE"] {
            assert_eq!(value(f), FieldValue::Bool(false), "{f}");
        }
        for bad in ["tRUE", "truee", "Tr", "fa", "yes", "on", "FALSe"] {
            assert_eq!(value_err(bad).0, 5, "{bad}");
        }
    }

    #[test]
    fn string_values() {
        assert_eq!(value(r#""""#), FieldValue::Str("".into()));
        assert_eq!(value(r#""running""#), FieldValue::Str("running".into()));
        assert_eq!(value(r#""a\\""#), FieldValue::Str(r"a\".into()));
        assert_eq!(value(r#""\"""#), FieldValue::Str(r#"""#.into()));
        let long = format!("\"{}\"", "x".repeat(MAX_STRING_LEN));
        assert!(matches!(value(&long), FieldValue::Str(s) if s.len() == MAX_STRING_LEN));
        let too_long = format!("\"{}\"", "x".repeat(MAX_STRING_LEN + 1));
        assert_eq!(value_err(&too_long).0, 5);
    }

    #[test]
    fn mixed_fields_in_order() {
        let p = one(r#"line1,asset=filler,tag=bowl a=1.5,b=2i,c=3u,d=t,e="x" 1732780800000000000"#);
        let keys: Vec<&str> = p.fields.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, ["a", "b", "c", "d", "e"]);
        assert_eq!(p.fields[2].1, FieldValue::U64(3));
        assert_eq!(p.fields[3].1, FieldValue::Bool(true));
        assert_eq!(p.timestamp, Some(1_732_780_800_000_000_000));
    }

    #[test]
    fn blank_comment_crlf_and_spacing() {
        assert_eq!(parse_point("", Precision::Ns), Ok(None));
        assert_eq!(parse_point("   ", Precision::Ns), Ok(None));
        assert_eq!(parse_point("\r\n", Precision::Ns), Ok(None));
        assert_eq!(parse_point("# a comment, with = signs", Precision::Ns), Ok(None));
        assert_eq!(parse_point("   # indented comment", Precision::Ns), Ok(None));
        let p = one("m v=1 7\r\n");
        assert_eq!(p.timestamp, Some(7));
        let p = one("m v=1\r\n");
        assert_eq!(p.timestamp, None);
        // Leading spaces, several spaces between sections, trailing spaces.
        let p = one("  m,t=a   v=1   9   ");
        assert_eq!(p.measurement, "m");
        assert_eq!(p.timestamp, Some(9));
        let p = one("m v=1   ");
        assert_eq!(p.timestamp, None);
        // Negative timestamps are allowed.
        assert_eq!(one("m v=1 -5").timestamp, Some(-5));
        // `#` inside a measurement is fine once it does not start the line.
        assert_eq!(one("a#b v=1").measurement, "a#b");
        // Two lines given to parse_point.
        assert_eq!(fail("m v=1\nm v=2").0, 6);
    }

    #[test]
    fn errors_have_exact_columns() {
        let cases: &[(&str, usize, &str)] = &[
            // Missing field set.
            ("m", 2, "missing field set"),
            ("m,t=a", 6, "missing field set"),
            ("m ", 3, "missing field set"),
            ("m,t=a   ", 9, "missing field set"),
            // Missing or broken parts of fields.
            ("m v", 4, "expected '=' after field key"),
            ("m v=", 5, "missing value"),
            ("m v=1,", 7, "expected field key"),
            ("m =1", 3, "expected field key"),
            ("m v=1,,w=2", 7, "expected field key"),
            // Bad numbers.
            ("m v=1.2.3 1", 5, "invalid number"),
            ("m a=1,v=12x", 9, "invalid number"),
            // Unterminated strings.
            (r#"m v="abc"#, 5, "unterminated string"),
            (r#"m a=1,v="abc\" 5"#, 9, "unterminated string"),
            // Timestamps.
            ("m v=1 12a", 7, "invalid timestamp"),
            ("m v=1 1.5", 7, "invalid timestamp"),
            ("m v=1 -", 7, "invalid timestamp"),
            ("m v=1 99999999999999999999", 7, "out of range"),
            // Trailing garbage.
            ("m v=1 123 x", 11, "unexpected text after timestamp"),
            ("m v=1 123   x y", 13, "unexpected text after timestamp"),
            (r#"m v="a"x"#, 8, "unexpected 'x' after field value"),
            ("m v=1x", 5, "invalid number"),
            // Measurement and tags.
            (",t=a v=1", 1, "expected measurement"),
            ("\tm v=1", 1, "expected measurement"),
            ("m, v=1", 3, "expected tag key"),
            ("m,t v=1", 4, "expected '=' after tag key"),
            ("m,t= v=1", 5, "expected tag value"),
            ("m,=a v=1", 3, "expected tag key"),
            ("m,t=a=b v=1", 6, "unexpected '=' in measurement or tag set"),
            ("m\tx v=1", 2, "unexpected '\\t'"),
            ("m v=1\rx", 6, "unexpected '\\r' after field value"),
        ];
        for (line, col, msg) in cases {
            let (c, m) = fail(line);
            assert_eq!(c, *col, "{line:?}: {m}");
            assert!(m.contains(msg), "{line:?}: {m:?} should contain {msg:?}");
        }
    }

    #[test]
    fn for_each_point_counts_and_reports_lines() {
        let body = "# header\n\nline1,asset=filler p=1 1\r\nline1,asset=capper p=2 2\n  \nline1 p=3";
        let mut seen = Vec::new();
        let n = for_each_point(body, Precision::Ns, |p| {
            seen.push((p.tags.first().map(|t| t.1.to_string()), p.timestamp));
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 3);
        assert_eq!(seen, [(Some("filler".to_owned()), Some(1)), (Some("capper".to_owned()), Some(2)), (None, None)]);

        let body = "m v=1\n# c\nm v=1 x\nm v=2\n";
        let err = for_each_point(body, Precision::Ns, |_| Ok(())).unwrap_err();
        assert_eq!(err.line, 3);
        assert_eq!(err.column, 7);
        assert!(err.to_string().starts_with("line 3, column 7: invalid timestamp"), "{err}");

        // Errors from the callback stop the parse at that line.
        let mut calls = 0;
        let err = for_each_point("m v=1\nm v=2\nm v=3\n", Precision::Ns, |_| {
            calls += 1;
            if calls == 2 {
                Err("store full".to_owned())
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert_eq!(err, LineError { line: 2, column: 1, message: "store full".to_owned() });
        assert_eq!(calls, 2);

        assert_eq!(for_each_point("", Precision::Ns, |_| Ok(())), Ok(0));
        assert_eq!(for_each_point("\n\n# x\n", Precision::Ns, |_| Ok(())), Ok(0));
    }

    #[test]
    fn reusing_variants_match_the_owning_one() {
        let body = "a,t=1 v=1i 1\nb\\ x,t\\=2=y s=\"q\\\"\" 2\n\nc v=t\n";
        let mut owned = Vec::new();
        for_each_point(body, Precision::Ms, |p| {
            owned.push(p);
            Ok(())
        })
        .unwrap();
        let mut lent = Vec::new();
        let n = for_each_point_ref(body, Precision::Ms, |p| {
            lent.push(p.clone());
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 3);
        assert_eq!(owned, lent);
        assert_eq!(owned[1].measurement, "b x");
        assert_eq!(owned[1].tags[0].0, "t=2");
        assert_eq!(owned[1].timestamp, Some(2_000_000));

        let mut p = Point::default();
        assert_eq!(parse_point_into("x,k=v a=1,b=2 3", Precision::Ns, &mut p), Ok(true));
        assert_eq!(parse_point_into("y c=1", Precision::Ns, &mut p), Ok(true));
        assert_eq!(p, one("y c=1"));
        assert_eq!(parse_point_into("# c", Precision::Ns, &mut p), Ok(false));
    }

    #[test]
    fn precision_scaling_and_overflow() {
        assert_eq!("ns".parse::<Precision>(), Ok(Precision::Ns));
        assert_eq!("us".parse::<Precision>(), Ok(Precision::Us));
        assert_eq!("ms".parse::<Precision>(), Ok(Precision::Ms));
        assert_eq!("s".parse::<Precision>(), Ok(Precision::S));
        assert!("h".parse::<Precision>().is_err());
        assert!("NS".parse::<Precision>().is_err());
        assert_eq!(Precision::default(), Precision::Ns);
        assert_eq!(Precision::Us.to_string(), "us");

        let ts = |line: &str, p: Precision| parse_point(line, p).unwrap().unwrap().timestamp;
        assert_eq!(ts("m v=1 1732780800", Precision::S), Some(1_732_780_800_000_000_000));
        assert_eq!(ts("m v=1 1732780800123", Precision::Ms), Some(1_732_780_800_123_000_000));
        assert_eq!(ts("m v=1 1732780800123456", Precision::Us), Some(1_732_780_800_123_456_000));
        assert_eq!(ts("m v=1 -2", Precision::S), Some(-2_000_000_000));
        assert_eq!(ts("m v=1 9223372036854775807", Precision::Ns), Some(i64::MAX));
        assert_eq!(ts("m v=1 -9223372036854775808", Precision::Ns), Some(i64::MIN));
        assert_eq!(ts("m v=1 9223372036", Precision::S), Some(9_223_372_036_000_000_000));

        let (col, msg) = parse_point("m v=1 9223372037", Precision::S).unwrap_err();
        assert_eq!(col, 7);
        assert!(msg.contains("out of range"), "{msg}");
        assert!(parse_point("m v=1 9223372036854776", Precision::Ms).is_err());
        assert_eq!(Precision::S.to_nanos(i64::MAX), None);
        assert_eq!(Precision::Us.to_nanos(-3), Some(-3_000));
    }

    #[test]
    fn line_error_display() {
        let e = LineError { line: 4, column: 9, message: "bad".to_owned() };
        assert_eq!(e.to_string(), "line 4, column 9: bad");
    }

    // --- CSV ---------------------------------------------------------------

    fn row(line: &str) -> CsvRow<'_> {
        match parse_csv_row(line) {
            Ok(Some(r)) => r,
            other => panic!("{line:?}: {other:?}"),
        }
    }

    #[test]
    fn csv_rows() {
        assert_eq!(parse_csv_row("series,ts,value"), Ok(None));
        assert_eq!(parse_csv_row("Series,Timestamp,Value\r\n"), Ok(None));
        assert_eq!(parse_csv_row(""), Ok(None));
        assert_eq!(parse_csv_row("  \n"), Ok(None));

        let r = row("filler.bowl_pressure,1732780800,3.214\n");
        assert_eq!(r.series, "filler.bowl_pressure");
        assert!(matches!(r.series, Cow::Borrowed(_)));
        assert_eq!(r.ts, 1_732_780_800 * NANOS_PER_SEC);
        assert_eq!(r.value, Value::F64(3.214));

        assert_eq!(row("c,1732780800.25,42").ts, 1_732_780_800_250_000_000);
        assert_eq!(row("c,1732780800.000000001,42").ts, 1_732_780_800_000_000_001);
        assert_eq!(row("c,-1.5,1").ts, -1_500_000_000);
        assert_eq!(row("c,0,42").value, Value::I64(42));
        assert_eq!(row("c,0,-7").value, Value::I64(-7));
        assert_eq!(row("c,0,1e3").value, Value::F64(1000.0));
        assert_eq!(row("c,0,99999999999999999999").value, Value::F64(1e20));
        assert_eq!(row("c,0,TRUE").value, Value::Bool(true));
        assert_eq!(row("c,0,false").value, Value::Bool(false));
        assert_eq!(row(r#"c,0,"running""#).value, Value::Str("running".into()));
        assert_eq!(row(r#"c,0,"say ""hi"", ok""#).value, Value::Str(r#"say "hi", ok"#.into()));
        assert_eq!(row(r#""a,b",0,1"#).series, "a,b");
        assert_eq!(row(" c , 5 , 1 ").ts, 5 * NANOS_PER_SEC);

        // RFC 3339 forms.
        let base = 1_732_780_800 * NANOS_PER_SEC; // 2024-11-28T08:00:00Z
        assert_eq!(row("c,2024-11-28T08:00:00Z,1").ts, base);
        assert_eq!(row("c,2024-11-28T08:00:00,1").ts, base);
        assert_eq!(row("c,2024-11-28 08:00:00.5,1").ts, base + 500_000_000);
        assert_eq!(row("c,2024-11-28T16:00:00+08:00,1").ts, base);
        assert_eq!(row("c,2024-11-28T16:00:00.25+08:00,1").ts, base + 250_000_000);
        assert_eq!(row("c,2024-11-28T03:30:00-04:30,1").ts, base);
    }

    #[test]
    fn csv_errors_have_columns() {
        let cases: &[(&str, usize, &str)] = &[
            ("c,1", 4, "expected 3 columns"),
            ("c,1,2,3", 7, "too many columns"),
            (",1,2", 1, "empty series"),
            ("c,yesterday,2", 3, "invalid RFC 3339"),
            ("c,1.,2", 3, "invalid Unix timestamp"),
            ("c,1.0000000001,2", 3, "invalid Unix timestamp"),
            ("c,2024-11-28T08:00:00+25:00,1", 3, "offset"),
            ("c,1969-12-31T00:00:00Z,1", 3, "invalid RFC 3339"),
            ("c,1,", 5, "missing value"),
            ("c,1,abc", 5, "invalid value"),
            ("c,1,NaN", 5, "invalid value"),
            ("c,1,inf", 5, "invalid value"),
            (r#"c,1,"open"#, 5, "unterminated"),
            (r#"c,1,"a"b"#, 8, "after closing quote"),
            (r#"c,"1",2"#, 3, "must not be quoted"),
        ];
        for (line, col, msg) in cases {
            match parse_csv_row(line) {
                Err((c, m)) => {
                    assert_eq!(c, *col, "{line:?}: {m}");
                    assert!(m.contains(msg), "{line:?}: {m:?} should contain {msg:?}");
                }
                Ok(r) => panic!("{line:?}: expected an error, got {r:?}"),
            }
        }
    }
}
