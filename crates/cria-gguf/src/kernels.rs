//! The products quantized inference runs besides the packed matrices: activation rows
//! quantized to q8_0 blocks (as in ggml, so each block's product with q8_0/q4_0 weights is a
//! 32-wide integer dot product scaled by the two scales), attention over the f16 KV cache, f32
//! rows. AVX2 (with FMA and F16C) is chosen at run time where the CPU has it, a portable loop
//! otherwise. On x86 with AVX2, q8_0/q4_0 matrices are repacked and multiplied by
//! [`crate::packed`] (AVX-512 VNNI or AVX2); the row-by-row q8_0/q4_0 products here are the
//! portable path (other CPUs) and the tests' reference.

use crate::quant::{Q4_0_BYTES, Q8_0_BYTES, QK};
use half::f16;

/// An activation row as q8_0 blocks: one f32 scale and 32 signed bytes per block.
#[derive(Default, Clone)]
pub struct Q8Row {
    pub d: Vec<f32>,
    pub qs: Vec<i8>,
    /// Minus 8 and minus 128 times each block's sum of bytes, for the packed kernels (empty
    /// where the CPU does not run them): they multiply the weights' codes as unsigned bytes
    /// (q4_0's value + 8, q8_0's + 128) and take the offset back with these.
    pub neg_s8: Vec<i32>,
    pub neg_s128: Vec<i32>,
}

impl Q8Row {
    /// Quantizes `x` (a whole number of blocks) into `self`, reusing its buffers.
    pub fn quantize(&mut self, x: &[f32]) {
        debug_assert_eq!(x.len() % QK, 0);
        self.d.clear();
        self.qs.clear();
        self.neg_s8.clear();
        self.neg_s128.clear();
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: the CPU has AVX2, FMA and F16C. The same code, compiled so rounding is
            // one instruction rather than a call to `rintf` (5% of a batched decode step).
            unsafe { quantize_avx2(self, x) };
        } else {
            quantize_into(self, x);
        }
        #[cfg(not(target_arch = "x86_64"))]
        quantize_into(self, x);
        if has_packed() {
            for b in self.qs.chunks_exact(QK) {
                let s: i32 = b.iter().map(|&v| v as i32).sum();
                self.neg_s8.push(-8 * s);
                self.neg_s128.push(-128 * s);
            }
        }
    }
}

/// ggml's activation quantizer (its SIMD path): scale by 127/max, round half to even, keep the
/// scale as f16; matching it keeps cria's products equal to llama.cpp's.
#[inline(always)]
fn quantize_into(q: &mut Q8Row, x: &[f32]) {
    for b in x.chunks_exact(QK) {
        let amax = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        q.d.push(f16::from_f32(d).to_f32());
        q.qs.extend(b.iter().map(|&v| (v * id).round_ties_even() as i8));
    }
}

/// [`quantize_into`] in AVX2: the same maximum, the same product and the same rounding (to
/// nearest, ties to even), eight values a step.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_avx2(q: &mut Q8Row, x: &[f32]) {
    use std::arch::x86_64::*;
    let sign = _mm256_set1_ps(-0.0);
    // packs_epi32/epi16 interleave the two 128-bit halves; this puts the bytes back in order.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for b in x.chunks_exact(QK) {
        let v = [0, 8, 16, 24].map(|i| unsafe { _mm256_loadu_ps(b.as_ptr().add(i)) });
        let m = v.iter().fold(_mm256_setzero_ps(), |m, &x| {
            _mm256_max_ps(m, _mm256_andnot_ps(sign, x))
        });
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
        let d = amax / 127.0;
        let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
        q.d.push(f16::from_f32(d).to_f32());
        let i = v.map(|x| {
            _mm256_cvtps_epi32(_mm256_round_ps(
                _mm256_mul_ps(x, id),
                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
            ))
        });
        let p = _mm256_packs_epi16(
            _mm256_packs_epi32(i[0], i[1]),
            _mm256_packs_epi32(i[2], i[3]),
        );
        let mut out = [0i8; QK];
        unsafe {
            _mm256_storeu_si256(
                out.as_mut_ptr() as *mut __m256i,
                _mm256_permutevar8x32_epi32(p, order),
            )
        };
        q.qs.extend_from_slice(&out);
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    })
}

/// AVX-512 with byte operations and VNNI, besides AVX2/FMA/F16C: quantized matrices are
/// repacked for [`crate::packed`]'s kernels. `CRIA_NO_AVX512` set turns them off (to compare
/// the two paths on one machine).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_vnni() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        has_avx2()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni")
            && std::env::var_os("CRIA_NO_AVX512").is_none()
    })
}

/// AVX-512F besides AVX2/FMA: f32 panels ([`crate::panels`]) take the 512-bit kernel.
/// `CRIA_NO_AVX512` set turns it off, as for [`has_vnni`].
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512f() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        has_avx2()
            && is_x86_feature_detected!("avx512f")
            && std::env::var_os("CRIA_NO_AVX512").is_none()
    })
}

/// Whether matrices are repacked at load: quantized ones for [`crate::packed`]'s kernels
/// (AVX-512 VNNI or AVX2), f32 ones for [`crate::panels`]' (AVX-512F or AVX2).
pub(crate) fn has_packed() -> bool {
    #[cfg(target_arch = "x86_64")]
    return has_avx2();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

fn scale(b: &[u8]) -> f32 {
    f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// `w · a` for a q8_0 weight row.
pub fn dot_q8_0(w: &[u8], a: &Q8Row) -> f32 {
    debug_assert_eq!(w.len(), a.d.len() * Q8_0_BYTES);
    let mut sum = 0.0f32;
    for (b, blk) in w.chunks_exact(Q8_0_BYTES).enumerate() {
        let qa = &a.qs[b * QK..(b + 1) * QK];
        let s: i32 = blk[2..]
            .iter()
            .zip(qa)
            .map(|(&x, &y)| x as i8 as i32 * y as i32)
            .sum();
        sum += s as f32 * scale(blk) * a.d[b];
    }
    sum
}

/// `w · a` for a q4_0 weight row.
pub fn dot_q4_0(w: &[u8], a: &Q8Row) -> f32 {
    debug_assert_eq!(w.len(), a.d.len() * Q4_0_BYTES);
    let mut sum = 0.0f32;
    for (b, blk) in w.chunks_exact(Q4_0_BYTES).enumerate() {
        let qa = &a.qs[b * QK..(b + 1) * QK];
        let mut s = 0i32;
        for (j, &q) in blk[2..].iter().enumerate() {
            s += ((q & 0xF) as i32 - 8) * qa[j] as i32;
            s += ((q >> 4) as i32 - 8) * qa[j + QK / 2] as i32;
        }
        sum += s as f32 * scale(blk) * a.d[b];
    }
    sum
}

/// `w · a[j]` for four activation rows at once (a prompt's rows): each weight block is loaded
/// and unpacked once for the four.
pub fn dot4_q8_0(w: &[u8], a: [&Q8Row; 4]) -> [f32; 4] {
    a.map(|x| dot_q8_0(w, x))
}

/// As [`dot4_q8_0`] for a q4_0 weight row.
pub fn dot4_q4_0(w: &[u8], a: [&Q8Row; 4]) -> [f32; 4] {
    a.map(|x| dot_q4_0(w, x))
}

/// Four weight rows against one activation row (decoding): each activation block is loaded
/// once for the four, and the four sums run in parallel.
pub fn rows4_q8_0(w: [&[u8]; 4], a: &Q8Row) -> [f32; 4] {
    w.map(|r| dot_q8_0(r, a))
}

/// As [`rows4_q8_0`] for q4_0 rows.
pub fn rows4_q4_0(w: [&[u8]; 4], a: &Q8Row) -> [f32; 4] {
    w.map(|r| dot_q4_0(r, a))
}

/// Scores of a group of query heads (`q`: `group × hd`, sharing one key/value head) against
/// `n` cached f16 keys (row `p` at `k[p·stride..]`): `s[g·n + p] = q_g · k_p · scale`.
pub fn attention_scores(
    q: &[f32],
    k: &[f16],
    stride: usize,
    n: usize,
    hd: usize,
    scale: f32,
    s: &mut [f32],
) {
    let group = q.len() / hd;
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && hd.is_multiple_of(8) {
        // SAFETY: as in dot_q8_0; hd is a multiple of 8 and every slice is long enough
        // (checked by the indexing below in debug builds and by the callers' shapes).
        return unsafe { x86::attention_scores(q, k, stride, n, hd, scale, s) };
    }
    for p in 0..n {
        let kp = &k[p * stride..p * stride + hd];
        for g in 0..group {
            s[g * n + p] = dot_f16(&q[g * hd..(g + 1) * hd], kp) * scale;
        }
    }
}

/// `out_g = Σ_p w[g·n + p] · v_p` over `n` cached f16 values (row `p` at `v[p·stride..]`).
pub fn attention_values(w: &[f32], v: &[f16], stride: usize, n: usize, hd: usize, out: &mut [f32]) {
    let group = out.len() / hd;
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && hd.is_multiple_of(8) {
        // SAFETY: as in attention_scores.
        return unsafe { x86::attention_values(w, v, stride, n, hd, out) };
    }
    for p in 0..n {
        let vp = &v[p * stride..p * stride + hd];
        for g in 0..group {
            axpy_f16(&mut out[g * hd..(g + 1) * hd], w[g * n + p], vp);
        }
    }
}

/// `q · k` for an f32 query and an f16 key (the KV cache).
pub fn dot_f16(q: &[f32], k: &[f16]) -> f32 {
    debug_assert_eq!(q.len(), k.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && q.len().is_multiple_of(8) {
        // SAFETY: as in dot_q8_0; the length is a multiple of 8.
        return unsafe { x86::dot_f16(q, k) };
    }
    q.iter().zip(k).map(|(a, b)| a * b.to_f32()).sum()
}

/// `out += w · v` for an f16 value row (the KV cache).
pub fn axpy_f16(out: &mut [f32], w: f32, v: &[f16]) {
    debug_assert_eq!(out.len(), v.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && out.len().is_multiple_of(8) {
        // SAFETY: as in dot_q8_0; the length is a multiple of 8.
        return unsafe { x86::axpy_f16(out, w, v) };
    }
    out.iter_mut()
        .zip(v)
        .for_each(|(o, x)| *o += w * x.to_f32());
}

/// `w · a` in f32 (as [`dots_f32`] adds it).
pub fn dot_f32(w: &[f32], a: &[f32]) -> f32 {
    dots_f32([w], [a])[0][0]
}

/// `out[r][c] = w[r] · a[c]` in f32 for up to four weight rows and two activation rows: each
/// pair in its own eight-lane sum over the columns in order, then the lanes and the tail, so a
/// pair's result is the same bits whatever R and C (a sequence's logits do not depend on the
/// batch it decodes in), while the R·C independent sums keep the FMA units busy.
pub fn dots_f32<const R: usize, const C: usize>(w: [&[f32]; R], a: [&[f32]; C]) -> [[f32; C]; R] {
    let n = a[0].len();
    assert!(w.iter().chain(&a).all(|x| x.len() == n), "equal lengths");
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has AVX2, FMA and F16C; every slice holds `n` values.
        return unsafe { x86::dots_f32(w, a) };
    }
    let m = n / 8 * 8;
    w.map(|wr| {
        a.map(|ar| {
            let mut acc = [0.0f32; 8];
            for (wc, ac) in wr[..m].chunks_exact(8).zip(ar[..m].chunks_exact(8)) {
                for i in 0..8 {
                    acc[i] += wc[i] * ac[i];
                }
            }
            let tail: f32 = wr[m..].iter().zip(&ar[m..]).map(|(x, y)| x * y).sum();
            acc.iter().sum::<f32>() + tail
        })
    })
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn attention_scores(
        q: &[f32],
        k: &[half::f16],
        stride: usize,
        n: usize,
        hd: usize,
        scale: f32,
        s: &mut [f32],
    ) {
        let group = q.len() / hd;
        assert!(s.len() >= group * n && (n == 0 || k.len() >= (n - 1) * stride + hd));
        let (qp, kp) = (q.as_ptr(), k.as_ptr() as *const u8);
        let key = |p: usize, c: usize| unsafe {
            _mm256_cvtph_ps(_mm_loadu_si128(
                kp.add(2 * (p * stride + c)) as *const __m128i
            ))
        };
        // Four keys at a time: four independent sums (one would wait on each FMA in turn).
        let n4 = n / 4 * 4;
        for p in (0..n4).step_by(4) {
            for g in 0..group {
                let mut acc = [_mm256_setzero_ps(); 4];
                for c in (0..hd).step_by(8) {
                    let qv = unsafe { _mm256_loadu_ps(qp.add(g * hd + c)) };
                    for (j, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(qv, key(p + j, c), *a);
                    }
                }
                for (j, a) in acc.iter().enumerate() {
                    s[g * n + p + j] = unsafe { hsum(*a) } * scale;
                }
            }
        }
        for p in n4..n {
            for g in 0..group {
                let mut acc = _mm256_setzero_ps();
                for c in (0..hd).step_by(8) {
                    let qv = unsafe { _mm256_loadu_ps(qp.add(g * hd + c)) };
                    acc = _mm256_fmadd_ps(qv, key(p, c), acc);
                }
                s[g * n + p] = unsafe { hsum(acc) } * scale;
            }
        }
    }

    /// `out_g = Σ_p w[g·n + p] · v_p`: eight output columns at a time held in registers for
    /// up to four heads of the group, over the positions in two interleaved sums.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn attention_values(
        w: &[f32],
        v: &[half::f16],
        stride: usize,
        n: usize,
        hd: usize,
        out: &mut [f32],
    ) {
        let group = out.len() / hd;
        assert!(w.len() >= group * n && (n == 0 || v.len() >= (n - 1) * stride + hd));
        let vp = v.as_ptr() as *const u8;
        let val = |p: usize, c: usize| unsafe {
            _mm256_cvtph_ps(_mm_loadu_si128(
                vp.add(2 * (p * stride + c)) as *const __m128i
            ))
        };
        let wt = |g: usize, p: usize| unsafe { _mm256_set1_ps(*w.get_unchecked(g * n + p)) };
        for g0 in (0..group).step_by(4) {
            let gs = (group - g0).min(4);
            for c in (0..hd).step_by(8) {
                let (mut a, mut b) = ([_mm256_setzero_ps(); 4], [_mm256_setzero_ps(); 4]);
                let mut p = 0;
                while p + 2 <= n {
                    let (x0, x1) = (val(p, c), val(p + 1, c));
                    for j in 0..gs {
                        a[j] = _mm256_fmadd_ps(wt(g0 + j, p), x0, a[j]);
                        b[j] = _mm256_fmadd_ps(wt(g0 + j, p + 1), x1, b[j]);
                    }
                    p += 2;
                }
                if p < n {
                    let x0 = val(p, c);
                    for (j, aj) in a.iter_mut().enumerate().take(gs) {
                        *aj = _mm256_fmadd_ps(wt(g0 + j, p), x0, *aj);
                    }
                }
                for j in 0..gs {
                    let o = &mut out[(g0 + j) * hd + c..(g0 + j) * hd + c + 8];
                    unsafe { _mm256_storeu_ps(o.as_mut_ptr(), _mm256_add_ps(a[j], b[j])) };
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f16(q: &[f32], k: &[half::f16]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let (qp, kp) = (q.as_ptr(), k.as_ptr() as *const u8);
        for i in (0..q.len()).step_by(8) {
            unsafe {
                let kv = _mm256_cvtph_ps(_mm_loadu_si128(kp.add(2 * i) as *const __m128i));
                acc = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(i)), kv, acc);
            }
        }
        unsafe { hsum(acc) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn axpy_f16(out: &mut [f32], w: f32, v: &[half::f16]) {
        let wv = _mm256_set1_ps(w);
        let (op, vp) = (out.as_mut_ptr(), v.as_ptr() as *const u8);
        for i in (0..out.len()).step_by(8) {
            unsafe {
                let x = _mm256_cvtph_ps(_mm_loadu_si128(vp.add(2 * i) as *const __m128i));
                _mm256_storeu_ps(
                    op.add(i),
                    _mm256_fmadd_ps(wv, x, _mm256_loadu_ps(op.add(i))),
                );
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dots_f32<const R: usize, const C: usize>(
        w: [&[f32]; R],
        a: [&[f32]; C],
    ) -> [[f32; C]; R] {
        let n = a[0].len();
        let m = n / 8 * 8;
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        let mut i = 0;
        while i < m {
            unsafe {
                let x = a.map(|ar| _mm256_loadu_ps(ar.as_ptr().add(i)));
                for r in 0..R {
                    let y = _mm256_loadu_ps(w[r].as_ptr().add(i));
                    for c in 0..C {
                        acc[r][c] = _mm256_fmadd_ps(y, x[c], acc[r][c]);
                    }
                }
            }
            i += 8;
        }
        let mut out = [[0.0f32; C]; R];
        for r in 0..R {
            for c in 0..C {
                let tail: f32 = w[r][m..].iter().zip(&a[c][m..]).map(|(x, y)| x * y).sum();
                out[r][c] = unsafe { hsum(acc[r][c]) } + tail;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant;

    /// The SIMD and portable paths agree with a plain dequantized dot product.
    #[test]
    fn block_dots_equal_dequantized_products() {
        let n = 256;
        let w: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 30.0)
            .collect();
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 53 % 89) as f32 - 44.0) / 20.0)
            .collect();
        let mut a = Q8Row::default();
        a.quantize(&x);
        let xq: Vec<f32> = (0..n).map(|i| a.qs[i] as f32 * a.d[i / QK]).collect();
        for ty in [quant::GgmlType::Q8_0, quant::GgmlType::Q4_0] {
            let bytes = quant::encode(ty, &w);
            let wq = quant::decode(ty, &bytes).unwrap();
            let want: f32 = wq.iter().zip(&xq).map(|(p, q)| p * q).sum();
            let got = if ty == quant::GgmlType::Q8_0 {
                dot_q8_0(&bytes, &a)
            } else {
                dot_q4_0(&bytes, &a)
            };
            assert!(
                (got - want).abs() <= 1e-3 * want.abs().max(1.0),
                "{ty:?}: {got} vs {want}"
            );
        }
        let want: f32 = w.iter().zip(&x).map(|(p, q)| p * q).sum();
        assert!((dot_f32(&w, &x) - want).abs() < 1e-3);
        // f32 tiles: every pair the same bits as alone (a length with a tail past the lanes).
        let m = n - 3;
        let (w2, x2): (Vec<f32>, Vec<f32>) = (w.iter().map(|v| v * 0.7).collect(), x.clone());
        let x3: Vec<f32> = x.iter().map(|v| 1.3 - v).collect();
        let rows = [&w[..m], &w2[..m], &x2[..m], &x3[..m]];
        let acts = [&x3[..m], &w[..m]];
        let tile = dots_f32(rows, acts);
        for (r, wr) in rows.iter().enumerate() {
            for (c, ac) in acts.iter().enumerate() {
                assert_eq!(
                    tile[r][c].to_bits(),
                    dot_f32(wr, ac).to_bits(),
                    "f32 tile {r},{c}"
                );
                let want: f32 = wr.iter().zip(*ac).map(|(p, q)| p * q).sum();
                assert!((tile[r][c] - want).abs() < 1e-3 * want.abs().max(1.0));
            }
        }
        let three = dots_f32([rows[1], rows[2], rows[3]], [acts[1]]);
        assert_eq!(three[2][0].to_bits(), tile[3][1].to_bits());
        // The f16 cache's products.
        let k16: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
        let want: f32 = w.iter().zip(&k16).map(|(p, q)| p * q.to_f32()).sum();
        assert!((dot_f16(&w, &k16) - want).abs() < 1e-3 * want.abs().max(1.0));
        let mut o1 = w.clone();
        axpy_f16(&mut o1, 0.7, &k16);
        for ((o, a), b) in o1.iter().zip(&w).zip(&k16) {
            assert!((o - (a + 0.7 * b.to_f32())).abs() < 1e-5);
        }
        // Grouped attention against a strided f16 cache equals head by head.
        let (hd, group, n, stride) = (16, 2, 5, 48);
        let kv: Vec<f16> = (0..n * stride)
            .map(|i| f16::from_f32(((i * 7 % 23) as f32 - 11.0) / 9.0))
            .collect();
        let q: Vec<f32> = (0..group * hd)
            .map(|i| ((i * 5 % 13) as f32 - 6.0) / 5.0)
            .collect();
        let mut s1 = vec![0.0; group * n];
        attention_scores(&q, &kv[8..], stride, n, hd, 0.5, &mut s1);
        let mut o1 = vec![0.0; group * hd];
        attention_values(&s1, &kv[8..], stride, n, hd, &mut o1);
        for g in 0..group {
            let mut o = vec![0.0; hd];
            for p in 0..n {
                let kp = &kv[8 + p * stride..8 + p * stride + hd];
                let want: f32 = q[g * hd..(g + 1) * hd]
                    .iter()
                    .zip(kp)
                    .map(|(a, b)| a * b.to_f32())
                    .sum::<f32>()
                    * 0.5;
                assert!((s1[g * n + p] - want).abs() < 1e-4);
                o.iter_mut()
                    .zip(kp)
                    .for_each(|(oj, x)| *oj += s1[g * n + p] * x.to_f32());
            }
            for (a, b) in o.iter().zip(&o1[g * hd..(g + 1) * hd]) {
                assert!((a - b).abs() < 1e-4);
            }
        }
        // Four weight rows at once equal one at a time, bit for bit (a sequence decoded alone
        // or in a batch gets the same logits).
        for ty in [quant::GgmlType::Q8_0, quant::GgmlType::Q4_0] {
            let rows: Vec<Vec<u8>> = (0..4)
                .map(|k| {
                    quant::encode(
                        ty,
                        &w.iter().map(|v| v * (k as f32 + 0.5)).collect::<Vec<_>>(),
                    )
                })
                .collect();
            let four = [&rows[0][..], &rows[1][..], &rows[2][..], &rows[3][..]];
            let (got, one): ([f32; 4], Vec<f32>) = if ty == quant::GgmlType::Q8_0 {
                (
                    rows4_q8_0(four, &a),
                    rows.iter().map(|r| dot_q8_0(r, &a)).collect(),
                )
            } else {
                (
                    rows4_q4_0(four, &a),
                    rows.iter().map(|r| dot_q4_0(r, &a)).collect(),
                )
            };
            for (g, o) in got.iter().zip(&one) {
                assert_eq!(g.to_bits(), o.to_bits(), "{ty:?} rows: {g} vs {o}");
            }
        }
        // Four activation rows at once equal one at a time, bit for bit.
        let rows: Vec<Q8Row> = (0..4)
            .map(|k| {
                let mut r = Q8Row::default();
                r.quantize(&x.iter().map(|v| v * (k as f32 - 1.5)).collect::<Vec<_>>());
                r
            })
            .collect();
        let four = [&rows[0], &rows[1], &rows[2], &rows[3]];
        for ty in [quant::GgmlType::Q8_0, quant::GgmlType::Q4_0] {
            let bytes = quant::encode(ty, &w);
            let (got, one): ([f32; 4], Vec<f32>) = if ty == quant::GgmlType::Q8_0 {
                (
                    dot4_q8_0(&bytes, four),
                    rows.iter().map(|r| dot_q8_0(&bytes, r)).collect(),
                )
            } else {
                (
                    dot4_q4_0(&bytes, four),
                    rows.iter().map(|r| dot_q4_0(&bytes, r)).collect(),
                )
            };
            for (g, o) in got.iter().zip(&one) {
                assert_eq!(g.to_bits(), o.to_bits(), "{ty:?}: {g} vs {o}");
            }
        }
        // The quantizer's two builds agree.
        let mut fast = Q8Row::default();
        fast.quantize(&x);
        let mut slow = Q8Row::default();
        quantize_into(&mut slow, &x);
        assert_eq!((fast.d, fast.qs), (slow.d, slow.qs));
    }
}
