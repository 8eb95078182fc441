//! Int8 weight matrices times f32 activations, the hot loop of local inference.
//!
//! Weights are held as int8 in blocks of 32 along each row with one f32 scale per
//! block (the Q8_0 scheme), repacked so that the kernel reads one sequential stream:
//! for each group of four rows, block `b` of the four rows lies in 128 contiguous
//! bytes (and their four scales in 16), then block `b + 1`. Activations are
//! quantized the same way per call. The AVX2/FMA kernel (chosen at run time)
//! computes four outputs at once with four independent accumulators; prompts use
//! two-token tiles so each weight load serves two tokens. Rows are split across
//! the current rayon pool. Without AVX2 a portable loop computes the same sums.
//!
//! A profile of candle 0.11's quantized product (SmolLM2-135M as Q8_0, one thread)
//! put 84 % of the time in its dot product, 13 points of it in out-of-line f16 → f32
//! conversions of block scales (docs/BENCHMARKS.md has the before and after).
//!
//! Its own crate so that the dev profile optimises it: tests run real models.

use rayon::prelude::*;

/// Elements per quantization block.
pub const BLOCK: usize = 32;
/// Output rows per kernel call; a matrix's rows must be a multiple of it.
pub const TILE: usize = 4;

/// A (rows × cols) weight matrix as repacked int8 blocks.
#[derive(Clone, Debug)]
pub struct Int8Matrix {
    rows: usize,
    cols: usize,
    qs: Vec<i8>,
    scales: Vec<f32>,
    simd: bool,
}

/// Activations quantized like the weights: `tokens` rows of `cols`.
struct Quantized {
    qs: Vec<i8>,
    scales: Vec<f32>,
}

/// Quantizes `x` (rows of `cols`, `cols` a multiple of 32) to int8 blocks: scale
/// max|x|/127 per block, values rounded to nearest, ties away from zero (as
/// `f32::round`, without its libm call, so the loop vectorises). Ties to even costs
/// SmolLM2 1 % of perplexity: weights dequantized from Q4_1 often fall on ties.
fn quantize(x: &[f32], cols: usize) -> Quantized {
    let blocks = x.len() / BLOCK;
    let mut qs = vec![0i8; x.len()];
    let mut scales = vec![0f32; blocks];
    debug_assert_eq!(cols % BLOCK, 0);
    for ((src, dst), scale) in x.chunks_exact(BLOCK).zip(qs.chunks_exact_mut(BLOCK)).zip(scales.iter_mut()) {
        let amax = src.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        for (q, v) in dst.iter_mut().zip(src) {
            // Truncate, then step away from zero when the dropped part is at least
            // one half: exactly `t.round()` for |t| < 2^23.
            let t = v * inv;
            let i = t as i32;
            let f = t - i as f32;
            *q = (i + i32::from(f >= 0.5) - i32::from(f <= -0.5)) as i8;
        }
        *scale = d;
    }
    Quantized { qs, scales }
}

fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl Int8Matrix {
    /// An empty matrix of `rows` × `cols` to be filled with [`Int8Matrix::set_rows`];
    /// `None` unless `rows` is a multiple of 4 and `cols` a non-zero multiple of 32.
    pub fn new(rows: usize, cols: usize) -> Option<Int8Matrix> {
        if !rows.is_multiple_of(TILE) || !cols.is_multiple_of(BLOCK) || cols == 0 {
            return None;
        }
        Some(Int8Matrix {
            rows,
            cols,
            qs: vec![0; rows * cols],
            scales: vec![0.0; rows * cols / BLOCK],
            simd: simd_available(),
        })
    }

    /// Quantizes `values` (whole rows, row-major) into rows `r0..` of the matrix.
    ///
    /// # Panics
    /// When `values` is not whole rows or runs past the last row.
    pub fn set_rows(&mut self, r0: usize, values: &[f32]) {
        let (cols, nb) = (self.cols, self.cols / BLOCK);
        assert!(values.len().is_multiple_of(cols) && r0 + values.len() / cols <= self.rows, "rows out of range");
        let Quantized { qs: flat, scales: flat_scales } = quantize(values, cols);
        for i in 0..values.len() / cols {
            let r = r0 + i;
            let (g, k) = (r / TILE, r % TILE);
            for b in 0..nb {
                let dst = ((g * nb + b) * TILE + k) * BLOCK;
                let src = i * cols + b * BLOCK;
                self.qs[dst..dst + BLOCK].copy_from_slice(&flat[src..src + BLOCK]);
                self.scales[(g * nb + b) * TILE + k] = flat_scales[i * nb + b];
            }
        }
    }

    /// Output rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input width.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Appends the rows of `other` (same width) below these.
    ///
    /// # Panics
    /// When the widths differ.
    pub fn stack(&mut self, other: &Int8Matrix) {
        assert_eq!(self.cols, other.cols, "stacked matrices must have the same width");
        self.rows += other.rows;
        self.qs.extend_from_slice(&other.qs);
        self.scales.extend_from_slice(&other.scales);
    }

    /// Uses the portable loop even where AVX2 is available (for tests).
    pub fn force_portable(&mut self) {
        self.simd = false;
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.qs.len() + 4 * self.scales.len()
    }

    /// `x` is `tokens` rows of `cols`; returns `tokens` rows of `rows`.
    pub fn matmul(&self, x: &[f32]) -> Vec<f32> {
        let tokens = x.len() / self.cols;
        let xq = quantize(x, self.cols);
        let threads = rayon::current_num_threads().max(1);
        // Row ranges: multiples of TILE, a few per thread so uneven cores even out.
        let per = self.rows.div_ceil(threads * 4).div_ceil(TILE).max(4) * TILE;
        let mut out = vec![0f32; tokens * self.rows];
        if threads == 1 || self.rows <= per {
            let part = self.rows_times(0, self.rows, &xq, tokens);
            scatter(&mut out, self.rows, 0, self.rows, &part);
            return out;
        }
        let starts: Vec<usize> = (0..self.rows).step_by(per).collect();
        let parts: Vec<(usize, usize, Vec<f32>)> = starts
            .par_iter()
            .map(|&r0| {
                let r1 = (r0 + per).min(self.rows);
                (r0, r1, self.rows_times(r0, r1, &xq, tokens))
            })
            .collect();
        for (r0, r1, part) in parts {
            scatter(&mut out, self.rows, r0, r1, &part);
        }
        out
    }

    /// Rows `r0..r1` (multiples of 4) times every token; laid out token-major:
    /// `[token][row - r0]`. Each group of four rows is used for every token while it
    /// is in cache.
    fn rows_times(&self, r0: usize, r1: usize, x: &Quantized, tokens: usize) -> Vec<f32> {
        let n = r1 - r0;
        let nb = self.cols / BLOCK;
        let group_len = TILE * self.cols;
        let mut part = vec![0f32; tokens * n];
        for g in r0 / TILE..r1 / TILE {
            let w = &self.qs[g * group_len..(g + 1) * group_len];
            let ws = &self.scales[g * TILE * nb..(g + 1) * TILE * nb];
            let o = g * TILE - r0;
            let mut t = 0;
            // Two tokens at a time share each load of the weights.
            while t + 2 <= tokens {
                let xq = &x.qs[t * self.cols..(t + 2) * self.cols];
                let xs = &x.scales[t * nb..(t + 2) * nb];
                let mut acc = [[0f32; TILE]; 2];
                self.dot4x2(w, ws, xq, xs, &mut acc);
                part[t * n + o..t * n + o + TILE].copy_from_slice(&acc[0]);
                part[(t + 1) * n + o..(t + 1) * n + o + TILE].copy_from_slice(&acc[1]);
                t += 2;
            }
            if t < tokens {
                let xq = &x.qs[t * self.cols..(t + 1) * self.cols];
                let xs = &x.scales[t * nb..(t + 1) * nb];
                let mut acc = [0f32; TILE];
                self.dot4(w, ws, xq, xs, &mut acc);
                part[t * n + o..t * n + o + TILE].copy_from_slice(&acc);
            }
        }
        part
    }

    /// One group of four weight rows dotted with two activation rows.
    fn dot4x2(&self, w: &[i8], ws: &[f32], xq: &[i8], xs: &[f32], acc: &mut [[f32; TILE]; 2]) {
        #[cfg(target_arch = "x86_64")]
        if self.simd {
            // SAFETY: AVX2 and FMA were detected at load; the kernel asserts the
            // slice lengths it reads.
            unsafe { avx2::dot4x2(w, ws, xq, xs, acc) };
            return;
        }
        let (nb, cols) = (xs.len() / 2, xq.len() / 2);
        dot4_portable(w, ws, &xq[..cols], &xs[..nb], &mut acc[0]);
        dot4_portable(w, ws, &xq[cols..], &xs[nb..], &mut acc[1]);
    }

    /// One group of four weight rows dotted with one activation row.
    fn dot4(&self, w: &[i8], ws: &[f32], xq: &[i8], xs: &[f32], acc: &mut [f32; TILE]) {
        #[cfg(target_arch = "x86_64")]
        if self.simd {
            // SAFETY: AVX2 and FMA were detected at load; the kernel asserts the
            // slice lengths it reads.
            unsafe { avx2::dot4(w, ws, xq, xs, acc) };
            return;
        }
        dot4_portable(w, ws, xq, xs, acc);
    }
}

/// Copies a token-major part for rows `r0..r1` into the (tokens × rows) output.
fn scatter(out: &mut [f32], rows: usize, r0: usize, r1: usize, part: &[f32]) {
    let n = r1 - r0;
    for (t, src) in part.chunks_exact(n).enumerate() {
        out[t * rows + r0..t * rows + r1].copy_from_slice(src);
    }
}

/// The portable kernel: a group of four rows (repacked) with one activation row.
fn dot4_portable(w: &[i8], ws: &[f32], x: &[i8], xs: &[f32], acc: &mut [f32; TILE]) {
    for (b, (xb, dx)) in x.chunks_exact(BLOCK).zip(xs).enumerate() {
        for (i, a) in acc.iter_mut().enumerate() {
            let wb = &w[(b * TILE + i) * BLOCK..(b * TILE + i + 1) * BLOCK];
            let s: i32 = wb.iter().zip(xb).map(|(p, q)| i32::from(*p) * i32::from(*q)).sum();
            *a += s as f32 * ws[b * TILE + i] * dx;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{BLOCK, TILE};

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(hi, _mm256_castps256_ps128(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// A group of four repacked weight rows (`w`: blocks of 4 × 32 int8, `ws`: 4
    /// scales per block) dotted with one activation row (`x`, `xs`).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot4(w: &[i8], ws: &[f32], x: &[i8], xs: &[f32], out: &mut [f32; TILE]) {
        let nb = xs.len();
        assert!(x.len() == nb * BLOCK && w.len() == TILE * nb * BLOCK && ws.len() == TILE * nb);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); TILE];
        let (wp, xp, sp) = (w.as_ptr(), x.as_ptr(), ws.as_ptr());
        for (b, dx) in xs.iter().enumerate() {
            // SAFETY: with the lengths asserted above, block b of x is x[32b..32b+32],
            // the four rows' blocks are w[128b..128b+128] and their scales ws[4b..4b+4].
            let xv = unsafe { _mm256_loadu_si256(xp.add(b * BLOCK) as *const __m256i) };
            let d = _mm_mul_ps(unsafe { _mm_loadu_ps(sp.add(b * TILE)) }, _mm_set1_ps(*dx));
            let d = [
                _mm256_broadcastss_ps(d),
                _mm256_broadcastss_ps(_mm_shuffle_ps::<0b01_01_01_01>(d, d)),
                _mm256_broadcastss_ps(_mm_shuffle_ps::<0b10_10_10_10>(d, d)),
                _mm256_broadcastss_ps(_mm_shuffle_ps::<0b11_11_11_11>(d, d)),
            ];
            for (r, a) in acc.iter_mut().enumerate() {
                let wv = unsafe { _mm256_loadu_si256(wp.add((b * TILE + r) * BLOCK) as *const __m256i) };
                // |w| · sign(x, w): unsigned × signed bytes, summed in pairs, then fours.
                let prod = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
                let sum = _mm256_cvtepi32_ps(_mm256_madd_epi16(prod, ones));
                *a = _mm256_fmadd_ps(sum, d[r], *a);
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            *o = hsum(a);
        }
    }

    /// A group of four repacked weight rows dotted with two activation rows (`x`:
    /// two rows of int8 one after the other, `xs`: their scales likewise). Each weight
    /// block is loaded and its absolute value taken once for both.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot4x2(w: &[i8], ws: &[f32], x: &[i8], xs: &[f32], out: &mut [[f32; TILE]; 2]) {
        let nb = xs.len() / 2;
        assert!(
            x.len() == 2 * nb * BLOCK && xs.len() == 2 * nb && w.len() == TILE * nb * BLOCK && ws.len() == TILE * nb
        );
        let ones = _mm256_set1_epi16(1);
        let mut acc0 = [_mm256_setzero_ps(); TILE];
        let mut acc1 = [_mm256_setzero_ps(); TILE];
        let (wp, xp, sp) = (w.as_ptr(), x.as_ptr(), ws.as_ptr());
        let cols = nb * BLOCK;
        for b in 0..nb {
            // SAFETY: within the lengths asserted above (see `dot4`); the second
            // activation row starts at `cols`.
            let x0 = unsafe { _mm256_loadu_si256(xp.add(b * BLOCK) as *const __m256i) };
            let x1 = unsafe { _mm256_loadu_si256(xp.add(cols + b * BLOCK) as *const __m256i) };
            let wsb = unsafe { _mm_loadu_ps(sp.add(b * TILE)) };
            let d0 = _mm_mul_ps(wsb, _mm_set1_ps(xs[b]));
            let d1 = _mm_mul_ps(wsb, _mm_set1_ps(xs[nb + b]));
            let lanes0 = [
                d0,
                _mm_shuffle_ps::<0b01_01_01_01>(d0, d0),
                _mm_shuffle_ps::<0b10_10_10_10>(d0, d0),
                _mm_shuffle_ps::<0b11_11_11_11>(d0, d0),
            ];
            let lanes1 = [
                d1,
                _mm_shuffle_ps::<0b01_01_01_01>(d1, d1),
                _mm_shuffle_ps::<0b10_10_10_10>(d1, d1),
                _mm_shuffle_ps::<0b11_11_11_11>(d1, d1),
            ];
            for r in 0..TILE {
                let wv = unsafe { _mm256_loadu_si256(wp.add((b * TILE + r) * BLOCK) as *const __m256i) };
                let aw = _mm256_sign_epi8(wv, wv);
                let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(x0, wv)), ones);
                let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(x1, wv)), ones);
                acc0[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), _mm256_broadcastss_ps(lanes0[r]), acc0[r]);
                acc1[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p1), _mm256_broadcastss_ps(lanes1[r]), acc1[r]);
            }
        }
        for r in 0..TILE {
            out[0][r] = hsum(acc0[r]);
            out[1][r] = hsum(acc1[r]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// The kernel (AVX2 where the CPU has it, else portable) against f32 products of
    /// the same weights, for single tokens, odd and even batches; and the portable
    /// path against the kernel up to float summation order.
    #[test]
    fn int8_products_match_f32() {
        let mut seed = 7u64;
        for (rows, cols, tokens) in [(4, 32, 1), (8, 64, 3), (132, 576, 1), (12, 1536, 5), (16, 96, 2)] {
            let w: Vec<f32> = (0..rows * cols).map(|_| lcg(&mut seed)).collect();
            let x: Vec<f32> = (0..tokens * cols).map(|_| lcg(&mut seed) * 3.0).collect();
            let mut m = Int8Matrix::new(rows, cols).unwrap();
            // In two parts, as the loader converts chunks of rows.
            let half = rows / 2 * cols;
            m.set_rows(0, &w[..half]);
            m.set_rows(rows / 2, &w[half..]);
            assert_eq!(m.bytes(), rows * cols + rows * cols / 8);
            let got = m.matmul(&x);
            m.force_portable();
            let portable = m.matmul(&x);
            for tk in 0..tokens {
                for r in 0..rows {
                    let exact: f32 = (0..cols).map(|c| w[r * cols + c] * x[tk * cols + c]).sum();
                    let g = got[tk * rows + r];
                    let tol = 0.02 * (cols as f32).sqrt();
                    assert!((g - exact).abs() < tol, "{rows}x{cols} t{tk} r{r}: {g} vs {exact}");
                    assert!((g - portable[tk * rows + r]).abs() < 1e-3, "simd and portable differ");
                }
            }
        }
    }

    #[test]
    fn quantization_rounds_like_f32_round_and_shapes_are_checked() {
        // Scale 1: 2.5 is a tie and rounds away from zero, as f32::round does (ties
        // to even would give 2).
        let mut x = vec![0.0f32; 32];
        x[..4].copy_from_slice(&[127.0, -2.5, 2.5, 0.4]);
        let q = quantize(&x, 32);
        assert_eq!(q.scales[0], 1.0);
        assert_eq!(&q.qs[..4], &[127, -3, 3, 0]);
        assert!(Int8Matrix::new(6, 32).is_none() && Int8Matrix::new(4, 48).is_none());
        let mut a = Int8Matrix::new(4, 32).unwrap();
        let b = Int8Matrix::new(8, 32).unwrap();
        a.stack(&b);
        assert_eq!((a.rows(), a.matmul(&[0.5; 32]).len()), (12, 12));
    }
}
