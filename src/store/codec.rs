//! Column codecs for sealed blocks: delta-of-delta timestamps, Gorilla XOR
//! floats, pcodec for floats and integers, run-length booleans, qualities and
//! dictionary-coded strings. Pure functions over byte slices; the block
//! format decides which codec a column uses and records it.

use thiserror::Error;

/// A column could not be decoded.
#[derive(Debug, Error, PartialEq)]
pub enum CodecError {
    /// The bytes ended before the column did.
    #[error("column truncated")]
    Truncated,
    /// A value in the column is impossible.
    #[error("corrupt column: {0}")]
    Corrupt(&'static str),
    /// pcodec refused the bytes.
    #[error("pcodec: {0}")]
    Pco(String),
}

// ---------------------------------------------------------------- bit I/O

/// Appends bits, most significant first.
#[derive(Default)]
pub struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    nbits: u32,
}

impl BitWriter {
    /// Writes the low `n` bits of `v` (n <= 64).
    #[inline]
    pub fn write(&mut self, v: u64, n: u32) {
        if n == 0 {
            return;
        }
        let v = if n == 64 { v } else { v & ((1u64 << n) - 1) };
        let free = 64 - self.nbits;
        if n <= free {
            self.acc = if n == 64 { v } else { (self.acc << n) | v };
            self.nbits += n;
        } else {
            let hi = n - free;
            self.acc = if free == 0 { self.acc } else { (self.acc << free) | (v >> hi) };
            self.nbits = 64;
            self.flush_full();
            self.acc = v & ((1u64 << hi) - 1);
            self.nbits = hi;
        }
        if self.nbits == 64 {
            self.flush_full();
        }
    }

    #[inline]
    fn flush_full(&mut self) {
        self.out.extend_from_slice(&self.acc.to_be_bytes());
        self.acc = 0;
        self.nbits = 0;
    }

    /// Pads the last byte with zeros and returns the bytes.
    pub fn finish(mut self) -> Vec<u8> {
        while self.nbits >= 8 {
            self.nbits -= 8;
            self.out.push((self.acc >> self.nbits) as u8);
        }
        if self.nbits > 0 {
            self.out.push((self.acc << (8 - self.nbits)) as u8);
        }
        self.out
    }
}

/// Reads bits written by [`BitWriter`].
pub struct BitReader<'a> {
    buf: &'a [u8],
    pos: usize, // bit position
}

impl<'a> BitReader<'a> {
    /// Reads from `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        BitReader { buf, pos: 0 }
    }

    /// Reads `n` bits (n <= 64).
    #[inline]
    pub fn read(&mut self, n: u32) -> Result<u64, CodecError> {
        if n == 0 {
            return Ok(0);
        }
        if self.pos + n as usize > self.buf.len() * 8 {
            return Err(CodecError::Truncated);
        }
        let mut v: u64 = 0;
        let mut left = n;
        while left > 0 {
            let byte = self.buf[self.pos / 8];
            let off = (self.pos % 8) as u32;
            let avail = 8 - off;
            let take = avail.min(left);
            let bits = (byte >> (avail - take)) & ((1u16 << take) - 1) as u8;
            v = if take == 64 { bits as u64 } else { (v << take) | bits as u64 };
            left -= take;
            self.pos += take as usize;
        }
        Ok(v)
    }

    /// Reads one bit.
    #[inline]
    pub fn bit(&mut self) -> Result<bool, CodecError> {
        if self.pos >= self.buf.len() * 8 {
            return Err(CodecError::Truncated);
        }
        let b = (self.buf[self.pos / 8] >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Ok(b == 1)
    }
}

// ---------------------------------------------------------------- varints

/// Appends an unsigned LEB128 varint.
#[inline]
pub fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads an unsigned LEB128 varint at `*pos`.
#[inline]
pub fn get_uvarint(buf: &[u8], pos: &mut usize) -> Result<u64, CodecError> {
    let mut v: u64 = 0;
    let mut shift = 0u32;
    loop {
        let b = *buf.get(*pos).ok_or(CodecError::Truncated)?;
        *pos += 1;
        if shift >= 64 {
            return Err(CodecError::Corrupt("varint too long"));
        }
        v |= ((b & 0x7f) as u64) << shift;
        if b < 0x80 {
            return Ok(v);
        }
        shift += 7;
    }
}

#[inline]
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

// ---------------------------------------------------------------- timestamps

/// Delta-of-delta timestamp buckets: (prefix bits, prefix value, payload bits).
/// Regular sampling costs one bit per sample; nanosecond jitter of a few
/// microseconds fits the 14- and 20-bit buckets.
const DOD_BUCKETS: [(u32, u64, u32); 5] =
    [(2, 0b10, 7), (3, 0b110, 14), (4, 0b1110, 20), (5, 0b11110, 32), (5, 0b11111, 64)];

/// Encodes timestamps (any order) with delta-of-delta.
pub fn encode_timestamps(ts: &[i64]) -> Vec<u8> {
    let mut w = BitWriter::default();
    let mut prev = 0i64;
    let mut prev_delta = 0i64;
    for (i, &t) in ts.iter().enumerate() {
        if i == 0 {
            w.write(t as u64, 64);
        } else {
            let delta = t.wrapping_sub(prev);
            let dod = delta.wrapping_sub(prev_delta);
            if dod == 0 {
                w.write(0, 1);
            } else {
                let z = zigzag(dod);
                let (plen, pval, bits) = DOD_BUCKETS
                    .iter()
                    .copied()
                    .find(|&(_, _, bits)| bits == 64 || z < (1u64 << bits))
                    .unwrap_or(DOD_BUCKETS[4]);
                w.write(pval, plen);
                w.write(z, bits);
            }
            prev_delta = delta;
        }
        prev = t;
    }
    w.finish()
}

/// The step when `ts` has at least two values and every delta is the same
/// (and positive), as with regular sampling.
pub fn constant_step(ts: &[i64]) -> Option<i64> {
    let step = ts.get(1)?.checked_sub(ts[0])?;
    if step <= 0 {
        return None;
    }
    ts.windows(2).all(|w| w[1].wrapping_sub(w[0]) == step).then_some(step)
}

/// Decodes `n` timestamps.
pub fn decode_timestamps(buf: &[u8], n: usize, out: &mut Vec<i64>) -> Result<(), CodecError> {
    out.reserve(n);
    let mut r = BitReader::new(buf);
    let mut prev = 0i64;
    let mut prev_delta = 0i64;
    for i in 0..n {
        let t = if i == 0 {
            r.read(64)? as i64
        } else {
            let dod = if !r.bit()? {
                0
            } else {
                let mut ones = 1;
                while ones < 5 && r.bit()? {
                    ones += 1;
                }
                let bits = DOD_BUCKETS[ones - 1].2;
                unzigzag(r.read(bits)?)
            };
            let delta = prev_delta.wrapping_add(dod);
            prev_delta = delta;
            prev.wrapping_add(delta)
        };
        out.push(t);
        prev = t;
    }
    Ok(())
}

// ---------------------------------------------------------------- Gorilla XOR

/// Encodes floats with Gorilla XOR compression (Pelkonen et al., VLDB 2015).
pub fn encode_gorilla(vals: &[f64]) -> Vec<u8> {
    let mut w = BitWriter::default();
    let mut prev = 0u64;
    let mut lead = u32::MAX;
    let mut trail = 0u32;
    for (i, v) in vals.iter().enumerate() {
        let bits = v.to_bits();
        if i == 0 {
            w.write(bits, 64);
            prev = bits;
            continue;
        }
        let x = bits ^ prev;
        prev = bits;
        if x == 0 {
            w.write(0, 1);
            continue;
        }
        let l = x.leading_zeros().min(31);
        let t = x.trailing_zeros();
        if lead != u32::MAX && l >= lead && t >= trail {
            w.write(0b10, 2);
            w.write(x >> trail, 64 - lead - trail);
        } else {
            lead = l;
            trail = t;
            let sig = 64 - l - t;
            w.write(0b11, 2);
            w.write(l as u64, 5);
            w.write((sig - 1) as u64, 6);
            w.write(x >> t, sig);
        }
    }
    w.finish()
}

/// Decodes `n` Gorilla-coded floats.
pub fn decode_gorilla(buf: &[u8], n: usize, out: &mut Vec<f64>) -> Result<(), CodecError> {
    out.reserve(n);
    let mut r = BitReader::new(buf);
    let mut prev = 0u64;
    let mut lead = 0u32;
    let mut trail = 0u32;
    for i in 0..n {
        if i == 0 {
            prev = r.read(64)?;
        } else if r.bit()? {
            if r.bit()? {
                lead = r.read(5)? as u32;
                let sig = r.read(6)? as u32 + 1;
                if lead + sig > 64 {
                    return Err(CodecError::Corrupt("gorilla window"));
                }
                trail = 64 - lead - sig;
            }
            let sig = 64 - lead - trail;
            prev ^= r.read(sig)? << trail;
        }
        out.push(f64::from_bits(prev));
    }
    Ok(())
}

// ---------------------------------------------------------------- pcodec

/// Compresses numbers with pcodec (default level).
pub fn encode_pco<T: pco::data_types::Number>(vals: &[T]) -> Result<Vec<u8>, CodecError> {
    pco::standalone::simple_compress(vals, &pco::ChunkConfig::default()).map_err(|e| CodecError::Pco(e.to_string()))
}

/// Decompresses pcodec numbers, checking the count.
pub fn decode_pco<T: pco::data_types::Number>(buf: &[u8], n: usize, out: &mut Vec<T>) -> Result<(), CodecError> {
    let v: Vec<T> = pco::standalone::simple_decompress(buf).map_err(|e| CodecError::Pco(e.to_string()))?;
    if v.len() != n {
        return Err(CodecError::Corrupt("pco count"));
    }
    out.extend_from_slice(&v);
    Ok(())
}

// ---------------------------------------------------------------- run lengths

/// Run-length codes `u32` symbols as (varint symbol, varint run) pairs.
pub fn encode_runs(vals: impl IntoIterator<Item = u32>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut cur: Option<(u32, u64)> = None;
    for v in vals {
        match &mut cur {
            Some((s, n)) if *s == v => *n += 1,
            _ => {
                if let Some((s, n)) = cur {
                    put_uvarint(&mut out, s as u64);
                    put_uvarint(&mut out, n);
                }
                cur = Some((v, 1));
            }
        }
    }
    if let Some((s, n)) = cur {
        put_uvarint(&mut out, s as u64);
        put_uvarint(&mut out, n);
    }
    out
}

/// Decodes `n` run-length coded symbols.
pub fn decode_runs(buf: &[u8], n: usize, out: &mut Vec<u32>) -> Result<(), CodecError> {
    out.reserve(n);
    let mut pos = 0;
    let mut got = 0usize;
    while got < n {
        let s = get_uvarint(buf, &mut pos)?;
        let run = get_uvarint(buf, &mut pos)? as usize;
        if run == 0 || got + run > n || s > u32::MAX as u64 {
            return Err(CodecError::Corrupt("run length"));
        }
        out.extend(std::iter::repeat_n(s as u32, run));
        got += run;
    }
    Ok(())
}

/// Dictionary + run-length codes strings: varint dictionary size, entries
/// (varint length + bytes), then the runs of dictionary indexes.
pub fn encode_strings(vals: &[String]) -> Vec<u8> {
    let mut dict: Vec<&str> = Vec::new();
    let mut idx = Vec::with_capacity(vals.len());
    for v in vals {
        let i = match dict.iter().position(|d| *d == v.as_str()) {
            Some(i) => i,
            None => {
                dict.push(v);
                dict.len() - 1
            }
        };
        idx.push(i as u32);
    }
    let mut out = Vec::new();
    put_uvarint(&mut out, dict.len() as u64);
    for d in &dict {
        put_uvarint(&mut out, d.len() as u64);
        out.extend_from_slice(d.as_bytes());
    }
    out.extend_from_slice(&encode_runs(idx));
    out
}

/// Decodes `n` dictionary-coded strings.
pub fn decode_strings(buf: &[u8], n: usize, out: &mut Vec<String>) -> Result<(), CodecError> {
    let mut pos = 0;
    let nd = get_uvarint(buf, &mut pos)? as usize;
    if nd > buf.len() {
        return Err(CodecError::Corrupt("dictionary size"));
    }
    let mut dict = Vec::with_capacity(nd);
    for _ in 0..nd {
        let len = get_uvarint(buf, &mut pos)? as usize;
        let end = pos.checked_add(len).ok_or(CodecError::Truncated)?;
        let bytes = buf.get(pos..end).ok_or(CodecError::Truncated)?;
        dict.push(std::str::from_utf8(bytes).map_err(|_| CodecError::Corrupt("utf-8"))?.to_string());
        pos = end;
    }
    let mut idx = Vec::new();
    decode_runs(&buf[pos..], n, &mut idx)?;
    out.reserve(n);
    for i in idx {
        out.push(dict.get(i as usize).ok_or(CodecError::Corrupt("dictionary index"))?.clone());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_regular_jittered_and_backwards() {
        let mut ts: Vec<i64> = (0..1000).map(|i| 1_700_000_000_000_000_000 + i * 1_000_000_000).collect();
        ts[10] += 3_456; // µs jitter
        ts[20] += 2_000_000; // ms jitter
        ts[30] -= 5_000_000_000; // out of order
        ts.push(i64::MIN);
        ts.push(i64::MAX);
        let enc = encode_timestamps(&ts);
        let mut out = Vec::new();
        decode_timestamps(&enc, ts.len(), &mut out).unwrap();
        assert_eq!(out, ts);
        let regular: Vec<i64> = (0..10_000).map(|i| i * 1_000_000_000).collect();
        assert!(encode_timestamps(&regular).len() < 10_000 / 8 + 32, "regular sampling must cost ~1 bit/sample");
    }

    #[test]
    fn gorilla_round_trips_special_values() {
        let vals = vec![
            1.0,
            1.0,
            1.5,
            -2.25,
            f64::NAN,
            f64::INFINITY,
            0.0,
            -0.0,
            1e-300,
            1.234,
            1.234,
            42.0,
            f64::MIN_POSITIVE,
        ];
        let enc = encode_gorilla(&vals);
        let mut out = Vec::new();
        decode_gorilla(&enc, vals.len(), &mut out).unwrap();
        for (a, b) in vals.iter().zip(&out) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
    }

    #[test]
    fn runs_and_strings_round_trip() {
        let q = vec![0u32, 0, 0, 0x8005_0000, 0x8005_0000, 0];
        let mut out = Vec::new();
        decode_runs(&encode_runs(q.iter().copied()), q.len(), &mut out).unwrap();
        assert_eq!(out, q);
        let s: Vec<String> = ["running", "running", "fault", "idle", "running"].iter().map(|s| s.to_string()).collect();
        let mut out = Vec::new();
        decode_strings(&encode_strings(&s), s.len(), &mut out).unwrap();
        assert_eq!(out, s);
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let ts: Vec<i64> = (0..100).map(|i| i * 7_919).collect();
        let enc = encode_timestamps(&ts);
        for cut in 0..enc.len() {
            let mut out = Vec::new();
            let _ = decode_timestamps(&enc[..cut], ts.len(), &mut out);
        }
        let enc = encode_gorilla(&[1.0, 2.0, 3.5, 7.25]);
        let mut out = Vec::new();
        assert!(decode_gorilla(&enc[..3], 4, &mut out).is_err());
    }
}
