//! q8_0 and q4_0 matrices repacked at load, sixteen rows interleaved so one 512-bit register
//! holds sixteen rows' codes (four consecutive codes per 32-bit lane). With AVX-512 VNNI one
//! `vpdpbusd` then multiplies four codes of sixteen rows by four bytes of one activation row
//! broadcast to every lane, and a block's eight such products add up in integers before the
//! one conversion and scale per block: the float work per block is per sixteen rows, not per
//! row, and nothing is summed across lanes at the end (each lane is one row's result). With
//! AVX2 each half of the layout (eight rows) is a 256-bit register and the products are
//! `vpmaddubsw` + `vpmaddwd`; the block sums and their scaling are the same, so are the bits.
//!
//! The repacked copy has the file's size (same codes, same f16 scales), so resident memory
//! stays about the file's size: the mapped pages it came from are handed back after packing.
//!
//! Layout, per group of sixteen rows (the last padded with zero rows), per block of 32 codes:
//! the sixteen rows' f16 scales (32 bytes), then the codes as unsigned bytes:
//! - q8_0: eight 64-byte registers, register `g` lane `l` byte `j` = row `l`'s code
//!   `4g + j` plus 128;
//! - q4_0: four 64-byte registers, register `h` lane `l` byte `j` = row `l`'s code `4h + j`
//!   in the low nibble and its code `4(h + 4) + j` = `4h + j + 16` in the high one (codes
//!   0–15, i.e. the value plus 8): ggml's own byte `4h + j`, so packing copies 4-byte runs.
//!
//! The offset the unsigned codes carry (128 or 8 times the sum of the activation block's
//! bytes) is taken back in integers: each block's sum starts from minus that product.
//! Every row's result adds its blocks in order, the same for any number of activation rows
//! in the call, so a sequence decodes to the same logits alone or in a batch.

use crate::kernels::Q8Row;
use crate::pages::{Region, Slab};
use crate::quant::{GgmlType, Q4_0_BYTES, Q8_0_BYTES, QK};
use std::sync::Arc;

/// Rows per interleaved group.
pub const ROWS: usize = 16;

/// A q8_0 or q4_0 matrix in the interleaved layout.
pub struct Packed {
    pub q4: bool,
    pub rows: usize,
    /// Blocks per row.
    pub nb: usize,
    data: Region,
}

impl Packed {
    /// Bytes of the repacked matrix (`q4`: q4_0, else q8_0).
    pub fn size(q4: bool, rows: usize, cols: usize) -> usize {
        rows.div_ceil(ROWS) * (cols / QK) * Self::block_bytes(q4)
    }

    /// Bytes of one block of one group: scales, then codes.
    fn block_bytes(q4: bool) -> usize {
        2 * ROWS + if q4 { ROWS * QK / 2 } else { ROWS * QK }
    }

    /// Repacks `rows` rows of `cols` values in ggml's encoding `ty` (q8_0 or q4_0).
    /// Repacks `rows` rows of `cols` values in ggml's encoding `ty` (q8_0 or q4_0) into a
    /// region of `slab`.
    pub fn new(ty: GgmlType, bytes: &[u8], rows: usize, cols: usize, slab: &Arc<Slab>) -> Packed {
        use rayon::prelude::*;
        let q4 = match ty {
            GgmlType::Q4_0 => true,
            GgmlType::Q8_0 => false,
            other => unreachable!("only q8_0 and q4_0 are packed, not {other:?}"),
        };
        let nb = cols / QK;
        let (bb, src) = (
            Self::block_bytes(q4),
            if q4 { Q4_0_BYTES } else { Q8_0_BYTES },
        );
        let mut data = slab.take(Self::size(q4, rows, cols));
        data.bytes_mut()
            .par_chunks_mut(nb * bb)
            .enumerate()
            .for_each(|(gi, group)| {
                for (b, out) in group.chunks_mut(bb).enumerate() {
                    for l in 0..ROWS.min(rows - gi * ROWS) {
                        let at = (gi * ROWS + l) * nb * src + b * src;
                        let blk = &bytes[at..at + src];
                        out[2 * l..2 * l + 2].copy_from_slice(&blk[..2]);
                        let codes = &mut out[2 * ROWS..];
                        // Register h's lane l is bytes 4h..4h+4 of the row's codes: for q4_0
                        // ggml's byte i already holds code i (low) and code i + 16 (high).
                        for (h, four) in blk[2..].chunks_exact(4).enumerate() {
                            let to = &mut codes[h * 64 + l * 4..h * 64 + l * 4 + 4];
                            if q4 {
                                to.copy_from_slice(four);
                            } else {
                                for (t, &c) in to.iter_mut().zip(four) {
                                    *t = c ^ 0x80;
                                }
                            }
                        }
                    }
                }
            });
        Packed { q4, rows, nb, data }
    }

    /// `out[c][r] = row r · a[c]` for every row `r` (`out[c]` has `rows` values): groups of
    /// sixteen rows split across threads, each against the activation rows four at a time.
    pub fn matmul(&self, a: &[Q8Row], out: &mut [Vec<f32>]) {
        use rayon::prelude::*;
        let groups = self.rows.div_ceil(ROWS);
        // By group: [group][c][16], then scattered to the rows.
        let mut by_group = vec![0.0f32; groups * a.len() * ROWS];
        let per = groups.div_ceil(4 * rayon::current_num_threads()).max(1);
        by_group
            .par_chunks_mut(per * a.len() * ROWS)
            .enumerate()
            .for_each(|(ci, part)| {
                for (k, o) in part.chunks_mut(a.len() * ROWS).enumerate() {
                    self.group(ci * per + k, a, o);
                }
            });
        out.par_iter_mut().enumerate().for_each(|(c, oc)| {
            oc.clear();
            oc.extend((0..self.rows).map(|r| {
                let (g, l) = (r / ROWS, r % ROWS);
                by_group[(g * a.len() + c) * ROWS + l]
            }));
        });
    }

    /// Group `g` against every activation row: `out[c * 16 + l]`.
    fn group(&self, g: usize, a: &[Q8Row], out: &mut [f32]) {
        let mut c = 0;
        while c < a.len() {
            let n = (a.len() - c).min(4);
            let o = &mut out[c * ROWS..(c + n) * ROWS];
            let x = &a[c..c + n];
            match n {
                4 => self.tile::<4>(g, [&x[0], &x[1], &x[2], &x[3]], o),
                3 => self.tile::<3>(g, [&x[0], &x[1], &x[2]], o),
                2 => self.tile::<2>(g, [&x[0], &x[1]], o),
                _ => self.tile::<1>(g, [&x[0]], o),
            }
            c += n;
        }
    }

    fn tile<const C: usize>(&self, g: usize, a: [&Q8Row; C], out: &mut [f32]) {
        let base = &self.data.bytes()[g * self.nb * Self::block_bytes(self.q4)..];
        #[cfg(target_arch = "x86_64")]
        {
            use crate::kernels::{has_avx2, has_vnni};
            // SAFETY: each kernel only where the CPU has its instructions (AVX-512 F/BW/VNNI,
            // or AVX2 with FMA and F16C); `base` holds the group's `nb` blocks and every
            // activation row `nb` blocks (checked by callers).
            let r = unsafe {
                match (has_vnni(), has_avx2(), self.q4) {
                    (true, _, true) => Some(x512::tile::<true, C>(base, self.nb, a)),
                    (true, _, false) => Some(x512::tile::<false, C>(base, self.nb, a)),
                    (false, true, true) => Some(x256::tile::<true, C>(base, self.nb, a)),
                    (false, true, false) => Some(x256::tile::<false, C>(base, self.nb, a)),
                    (false, false, _) => None,
                }
            };
            if let Some(r) = r {
                for (o, v) in out.chunks_mut(ROWS).zip(r) {
                    o.copy_from_slice(&v);
                }
                return;
            }
        }
        self.tile_portable(base, &a, out);
    }

    /// The same products in plain Rust (a CPU without VNNI does not pack; tests compare).
    fn tile_portable(&self, base: &[u8], a: &[&Q8Row], out: &mut [f32]) {
        let bb = Self::block_bytes(self.q4);
        for (c, x) in a.iter().enumerate() {
            for l in 0..ROWS {
                let mut acc = 0.0f32;
                for b in 0..self.nb {
                    let blk = &base[b * bb..(b + 1) * bb];
                    let dw = half::f16::from_le_bytes([blk[2 * l], blk[2 * l + 1]]).to_f32();
                    let codes = &blk[2 * ROWS..];
                    let qa = &x.qs[b * QK..(b + 1) * QK];
                    let off = if self.q4 { 8 } else { 128 };
                    let mut s: i32 = -off * qa.iter().map(|&v| v as i32).sum::<i32>();
                    for k in 0..QK {
                        let j = k % 4;
                        let u = if self.q4 {
                            let byte = codes[((k / 4) % 4) * 64 + l * 4 + j];
                            if k >= 16 { byte >> 4 } else { byte & 0xF }
                        } else {
                            codes[(k / 4) * 64 + l * 4 + j]
                        };
                        s += u as i32 * qa[k] as i32;
                    }
                    acc = (dw * x.d[b]).mul_add(s as f32, acc);
                }
                out[c * ROWS + l] = acc;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x512 {
    use super::{QK, ROWS};
    use crate::kernels::Q8Row;
    use std::arch::x86_64::*;

    /// Sixteen rows (the group at `base`, `nb` blocks) against `C` activation rows.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub unsafe fn tile<const Q4: bool, const C: usize>(
        base: &[u8],
        nb: usize,
        a: [&Q8Row; C],
    ) -> [[f32; ROWS]; C] {
        let bb = super::Packed::block_bytes(Q4);
        debug_assert!(base.len() >= nb * bb);
        let mut acc = [_mm512_setzero_ps(); C];
        let mask = _mm512_set1_epi8(0x0F);
        for b in 0..nb {
            unsafe {
                let blk = base.as_ptr().add(b * bb);
                let dw = _mm512_cvtph_ps(_mm256_loadu_si256(blk as *const __m256i));
                let codes = blk.add(2 * ROWS);
                let mut w = [_mm512_setzero_si512(); 8];
                if Q4 {
                    for h in 0..4 {
                        let p = _mm512_loadu_si512(codes.add(64 * h) as *const __m512i);
                        w[h] = _mm512_and_si512(p, mask);
                        w[h + 4] = _mm512_and_si512(_mm512_srli_epi16(p, 4), mask);
                    }
                } else {
                    for (g, wg) in w.iter_mut().enumerate() {
                        *wg = _mm512_loadu_si512(codes.add(64 * g) as *const __m512i);
                    }
                }
                for c in 0..C {
                    let x = a[c];
                    let qa = x.qs.as_ptr().add(b * QK) as *const i32;
                    let off = if Q4 { &x.neg_s8 } else { &x.neg_s128 };
                    let mut s0 = _mm512_set1_epi32(*off.get_unchecked(b));
                    let mut s1 = _mm512_setzero_si512();
                    for g in (0..8).step_by(2) {
                        let a0 = _mm512_set1_epi32(qa.add(g).read_unaligned());
                        let a1 = _mm512_set1_epi32(qa.add(g + 1).read_unaligned());
                        s0 = _mm512_dpbusd_epi32(s0, w[g], a0);
                        s1 = _mm512_dpbusd_epi32(s1, w[g + 1], a1);
                    }
                    let s = _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1));
                    let scale = _mm512_mul_ps(dw, _mm512_set1_ps(*x.d.get_unchecked(b)));
                    acc[c] = _mm512_fmadd_ps(scale, s, acc[c]);
                }
            }
        }
        acc.map(|v| {
            let mut o = [0.0f32; ROWS];
            unsafe { _mm512_storeu_ps(o.as_mut_ptr(), v) };
            o
        })
    }
}

/// The same products in AVX2, eight rows per register: `vpmaddubsw` multiplies unsigned by
/// signed bytes into 16-bit pairs and `vpmaddwd` adds the pairs into 32 bits. q4_0's codes
/// (0–15) go in as they are (no pair can overflow 16 bits); q8_0's would (255 · 127 · 2), so
/// they go in as ggml's AVX2 kernels do: absolute values, with their signs moved onto the
/// activations. Block sums are the same integers as the AVX-512 path's and are scaled in the
/// same order, so the two give the same bits.
#[cfg(target_arch = "x86_64")]
mod x256 {
    use super::{QK, ROWS};
    use crate::kernels::Q8Row;
    use std::arch::x86_64::*;

    // `half` picks the bytes of the scales and codes as well as the accumulator.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn tile<const Q4: bool, const C: usize>(
        base: &[u8],
        nb: usize,
        a: [&Q8Row; C],
    ) -> [[f32; ROWS]; C] {
        let bb = super::Packed::block_bytes(Q4);
        debug_assert!(base.len() >= nb * bb);
        let mut acc = [[_mm256_setzero_ps(); 2]; C];
        let (mask, high, ones) = (
            _mm256_set1_epi8(0x0F),
            _mm256_set1_epi8(-128),
            _mm256_set1_epi16(1),
        );
        for b in 0..nb {
            unsafe {
                let blk = base.as_ptr().add(b * bb);
                let codes = blk.add(2 * ROWS);
                // Rows 0–7, then rows 8–15: each the low or high 32 bytes of a register's 64.
                for half in 0..2 {
                    let dw = _mm256_cvtph_ps(_mm_loadu_si128(blk.add(16 * half) as *const __m128i));
                    let mut sums = [_mm256_setzero_si256(); C];
                    for (c, s) in sums.iter_mut().enumerate() {
                        if Q4 {
                            *s = _mm256_set1_epi32(*a[c].neg_s8.get_unchecked(b));
                        }
                    }
                    for g in 0..8 {
                        let at = if Q4 { 64 * (g % 4) } else { 64 * g } + 32 * half;
                        let raw = _mm256_loadu_si256(codes.add(at) as *const __m256i);
                        let w = if !Q4 {
                            _mm256_xor_si256(raw, high)
                        } else if g < 4 {
                            _mm256_and_si256(raw, mask)
                        } else {
                            _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask)
                        };
                        let wu = if Q4 { w } else { _mm256_sign_epi8(w, w) };
                        for c in 0..C {
                            let qa = a[c].qs.as_ptr().add(b * QK + 4 * g) as *const i32;
                            let x = _mm256_set1_epi32(qa.read_unaligned());
                            let x = if Q4 { x } else { _mm256_sign_epi8(x, w) };
                            let p = _mm256_madd_epi16(_mm256_maddubs_epi16(wu, x), ones);
                            sums[c] = _mm256_add_epi32(sums[c], p);
                        }
                    }
                    for c in 0..C {
                        let scale = _mm256_mul_ps(dw, _mm256_set1_ps(*a[c].d.get_unchecked(b)));
                        acc[c][half] =
                            _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sums[c]), acc[c][half]);
                    }
                }
            }
        }
        acc.map(|[lo, hi]| {
            let mut o = [0.0f32; ROWS];
            unsafe {
                _mm256_storeu_ps(o.as_mut_ptr(), lo);
                _mm256_storeu_ps(o.as_mut_ptr().add(8), hi);
            }
            o
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{dot_q4_0, dot_q8_0};
    use crate::quant;

    /// Packed products equal the row kernels' (up to float order) for row counts that leave
    /// a partial group, an odd number of blocks, and every tile width; each activation row's
    /// results are the same bits alone or with others; and the AVX-512, AVX2 and portable
    /// kernels (whichever this CPU runs) give the same bits.
    #[test]
    fn packed_products_equal_the_row_kernels() {
        let (rows, cols) = (21, 5 * QK);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 30.0)
            .collect();
        let acts: Vec<Q8Row> = (0..6)
            .map(|c| {
                let x: Vec<f32> = (0..cols)
                    .map(|i| ((i * 53 + c * 11) % 89) as f32 / 20.0 - 2.2)
                    .collect();
                let mut q = Q8Row::default();
                q.quantize(&x);
                q
            })
            .collect();
        let mut paths = 0;
        for ty in [GgmlType::Q8_0, GgmlType::Q4_0] {
            let bytes = quant::encode(ty, &w);
            let rb = ty.row_bytes(cols).unwrap();
            let p = Packed::new(ty, &bytes, rows, cols, &Slab::new(1 << 20));
            let mut all = vec![vec![]; acts.len()];
            p.matmul(&acts, &mut all);
            for (c, x) in acts.iter().enumerate() {
                let mut alone = vec![vec![]];
                p.matmul(std::slice::from_ref(x), &mut alone);
                for r in 0..rows {
                    let row = &bytes[r * rb..(r + 1) * rb];
                    let want = if ty == GgmlType::Q4_0 {
                        dot_q4_0(row, x)
                    } else {
                        dot_q8_0(row, x)
                    };
                    let got = all[c][r];
                    assert!(
                        (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                        "{ty:?} row {r} act {c}: {got} vs {want}"
                    );
                    assert_eq!(got.to_bits(), alone[0][r].to_bits(), "{ty:?} alone");
                }
            }
            // Group by group, each kernel this CPU has against the portable one.
            for g in 0..rows.div_ceil(ROWS) {
                let base = &p.data.bytes()[g * p.nb * Packed::block_bytes(p.q4)..];
                let four = [&acts[0], &acts[1], &acts[2], &acts[3]];
                let mut want = vec![0.0; 4 * ROWS];
                p.tile_portable(base, &four, &mut want);
                let mut kernels: Vec<Vec<f32>> = vec![];
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    // SAFETY: each kernel only where the CPU has its instructions.
                    if crate::kernels::has_vnni() {
                        kernels.push(if p.q4 {
                            x512::tile::<true, 4>(base, p.nb, four).concat()
                        } else {
                            x512::tile::<false, 4>(base, p.nb, four).concat()
                        });
                    }
                    if crate::kernels::has_avx2() {
                        kernels.push(if p.q4 {
                            x256::tile::<true, 4>(base, p.nb, four).concat()
                        } else {
                            x256::tile::<false, 4>(base, p.nb, four).concat()
                        });
                    }
                }
                for k in &kernels {
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(k), bits(&want), "{ty:?} group {g}");
                }
                paths = paths.max(kernels.len());
            }
        }
        eprintln!("packed kernels compared with the portable one: {paths}");
    }
}
