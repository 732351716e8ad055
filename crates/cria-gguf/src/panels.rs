//! f32 matrices (f32 files, and f16/bf16 ones widened at load) repacked at load into panels of
//! sixteen rows: for each column, the sixteen rows' values side by side, so one 512-bit load
//! (two 256-bit ones) holds a column of sixteen rows. A product tile then keeps six activation
//! rows by sixty-four weight rows in registers: per column, four loads of weights and six
//! broadcast activation values feed twenty-four FMAs (AVX-512; with AVX2, six rows by sixteen:
//! two loads and six broadcasts for twelve FMAs). The row-pair dot products this replaces spent
//! a load of each operand per FMA and a lane sum per pair, and ran prompts at a fifth of the
//! FMA peak.
//!
//! Every result is one fused multiply-add chain over the columns in order, from zero: the same
//! bits whatever the tile, the number of activation rows in the call, or the instruction set
//! (AVX-512, AVX2 and the portable loop are tested equal), so a sequence decodes to the same
//! logits alone or in a batch, and a prompt's rows equal the decoding steps'. Columns are taken
//! [`KC`] at a time (the tile's weights stay in the first-level cache while every activation
//! row passes over them); the chain carries on through the stored partial sums, which are the
//! same f32 values the registers held.
//!
//! The panels have the matrix's size (the last group padded with zero rows), so an f32 file's
//! mapped pages are handed back once packed, and resident memory stays about the file's size.

use crate::pages::{Region, Slab};
use rayon::prelude::*;
use std::sync::Arc;

/// Rows per panel.
pub const ROWS: usize = 16;
/// Panels per tile: a tile's outputs are `MR × (NR · 16)`.
const NR: usize = 4;
/// Activation rows per tile.
const MR: usize = 6;
/// Columns per pass over a tile's panels (4 panels × 128 columns × 4 bytes = 32 KiB).
const KC: usize = 128;

/// An f32 matrix in panels of sixteen rows.
pub struct Panels {
    pub rows: usize,
    pub cols: usize,
    /// `[panel][column][16]`.
    data: Region,
}

impl Panels {
    /// Repacks `rows` rows of `cols` values (row-major `w`) into a region of `slab`.
    pub fn new(w: &[f32], rows: usize, cols: usize, slab: &Arc<Slab>) -> Panels {
        assert_eq!(w.len(), rows * cols, "a {rows} × {cols} matrix");
        let mut data = slab.take(Self::size(rows, cols));
        data.f32s_mut()
            .par_chunks_mut(cols * ROWS)
            .enumerate()
            .for_each(|(g, panel)| {
                let n = ROWS.min(rows - g * ROWS);
                let src = &w[g * ROWS * cols..(g * ROWS + n) * cols];
                // Written in order (sixteen rows read side by side).
                for (k, col) in panel.chunks_exact_mut(ROWS).enumerate() {
                    for (l, v) in col[..n].iter_mut().enumerate() {
                        *v = src[l * cols + k];
                    }
                }
            });
        Panels { rows, cols, data }
    }

    /// Bytes of the panels of a `rows × cols` matrix.
    pub fn size(rows: usize, cols: usize) -> usize {
        rows.div_ceil(ROWS) * cols * ROWS * 4
    }

    /// Row `r` (an embedding lookup from a tied head).
    pub fn row(&self, r: usize) -> Vec<f32> {
        let (g, l) = (r / ROWS, r % ROWS);
        let panel = &self.data.f32s()[g * self.cols * ROWS..(g + 1) * self.cols * ROWS];
        panel.chunks_exact(ROWS).map(|col| col[l]).collect()
    }

    /// `out[c][r] = row r · a[c]` for every row `r` (`out[c]` gets `rows` values): tiles of
    /// sixty-four rows split across threads, each against every activation row.
    pub fn matmul(&self, a: &[Vec<f32>], out: &mut [Vec<f32>]) {
        assert!(
            a.iter().all(|x| x.len() == self.cols),
            "activation rows of {} values",
            self.cols
        );
        let (m, tile) = (a.len(), NR * ROWS);
        let tiles = self.rows.div_ceil(tile);
        // By tile: [tile][c][64], then scattered to the rows.
        let mut by_tile = vec![0.0f32; tiles * m * tile];
        let per = tiles.div_ceil(4 * rayon::current_num_threads()).max(1);
        by_tile
            .par_chunks_mut(per * m * tile)
            .enumerate()
            .for_each(|(ci, part)| {
                for (k, o) in part.chunks_mut(m * tile).enumerate() {
                    self.tile(ci * per + k, a, o);
                }
            });
        out.par_iter_mut().enumerate().for_each(|(c, oc)| {
            oc.clear();
            for t in 0..tiles {
                let row = &by_tile[(t * m + c) * tile..(t * m + c + 1) * tile];
                oc.extend_from_slice(&row[..tile.min(self.rows - t * tile)]);
            }
        });
    }

    /// Tile `t` (panels `NR·t..`) against every activation row: `out[c * 64 + j]`.
    fn tile(&self, t: usize, a: &[Vec<f32>], out: &mut [f32]) {
        let g0 = t * NR;
        let n = NR.min(self.rows.div_ceil(ROWS) - g0);
        let kernel = Kernel::pick();
        for k0 in (0..self.cols).step_by(KC) {
            let kc = KC.min(self.cols - k0);
            let w = &self.data.f32s()[(g0 * self.cols + k0) * ROWS..];
            for m0 in (0..a.len()).step_by(MR) {
                let mr = MR.min(a.len() - m0);
                let x: Vec<&[f32]> = a[m0..m0 + mr].iter().map(|r| &r[k0..k0 + kc]).collect();
                let c = &mut out[m0 * NR * ROWS..(m0 + mr) * NR * ROWS];
                kernel.run(w, self.cols * ROWS, n, &x, c, k0 == 0);
            }
        }
    }
}

/// Runs `$call` with `$p` the activation rows' pointers as an array of their count (the
/// kernels' `M`).
macro_rules! by_rows {
    ($x:expr, |$p:ident| $call:expr) => {{
        let x = $x;
        match x.len() {
            6 => {
                let $p: [*const f32; 6] = std::array::from_fn(|i| x[i].as_ptr());
                $call
            }
            5 => {
                let $p: [*const f32; 5] = std::array::from_fn(|i| x[i].as_ptr());
                $call
            }
            4 => {
                let $p: [*const f32; 4] = std::array::from_fn(|i| x[i].as_ptr());
                $call
            }
            3 => {
                let $p: [*const f32; 3] = std::array::from_fn(|i| x[i].as_ptr());
                $call
            }
            2 => {
                let $p: [*const f32; 2] = std::array::from_fn(|i| x[i].as_ptr());
                $call
            }
            _ => {
                let $p: [*const f32; 1] = [x[0].as_ptr()];
                $call
            }
        }
    }};
}

/// The product kernel this CPU runs.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Kernel {
    fn pick() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if crate::kernels::has_avx512f() {
                return Kernel::Avx512;
            }
            if crate::kernels::has_avx2() {
                return Kernel::Avx2;
            }
        }
        Kernel::Portable
    }

    /// `c[i * 64 + 16 j + l]` (`first`: from zero, else carrying on from its value) plus
    /// `x[i][k] · w[j · gs + 16 k + l]` over the `x[i].len()` columns, for `n` panels `j` and
    /// every activation row `i` (at most [`MR`]).
    fn run(self, w: &[f32], gs: usize, n: usize, x: &[&[f32]], c: &mut [f32], first: bool) {
        let kc = x[0].len();
        assert!(n <= NR && x.len() <= MR && c.len() >= x.len() * NR * ROWS);
        assert!(
            w.len() >= (n - 1) * gs + kc * ROWS,
            "the panels hold the tile's columns"
        );
        match self {
            Kernel::Portable => portable(w, gs, n, x, c, first),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => {
                for j in 0..n {
                    let (w, c) = (&w[j * gs..], &mut c[j * ROWS..]);
                    // SAFETY: AVX2/FMA present (`pick`); lengths checked above.
                    unsafe { by_rows!(x, |p| x256::tile(p, w, c, kc, first)) }
                }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => {
                // SAFETY: AVX-512F present (`pick`); lengths checked above.
                unsafe {
                    match n {
                        4 => by_rows!(x, |p| x512::tile::<_, 4>(p, w, gs, c, kc, first)),
                        3 => by_rows!(x, |p| x512::tile::<_, 3>(p, w, gs, c, kc, first)),
                        2 => by_rows!(x, |p| x512::tile::<_, 2>(p, w, gs, c, kc, first)),
                        _ => by_rows!(x, |p| x512::tile::<_, 1>(p, w, gs, c, kc, first)),
                    }
                }
            }
        }
    }
}

/// The products in plain Rust: `mul_add` is the same single rounding as the FMA instructions.
fn portable(w: &[f32], gs: usize, n: usize, x: &[&[f32]], c: &mut [f32], first: bool) {
    for (i, xi) in x.iter().enumerate() {
        for j in 0..n {
            let cj = &mut c[i * NR * ROWS + j * ROWS..i * NR * ROWS + (j + 1) * ROWS];
            if first {
                cj.fill(0.0);
            }
            for (k, &v) in xi.iter().enumerate() {
                let col = &w[j * gs + k * ROWS..j * gs + (k + 1) * ROWS];
                for (o, &wv) in cj.iter_mut().zip(col) {
                    *o = v.mul_add(wv, *o);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x512 {
    use super::{NR, ROWS};
    use std::arch::x86_64::*;

    /// `M` activation rows (`x[i]`, `kc` columns) by `N` panels (`w`, `gs` floats apart) into
    /// `c` (rows 64 floats apart).
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn tile<const M: usize, const N: usize>(
        x: [*const f32; M],
        w: &[f32],
        gs: usize,
        c: &mut [f32],
        kc: usize,
        first: bool,
    ) {
        unsafe {
            let (w, c) = (w.as_ptr(), c.as_mut_ptr());
            let mut acc = [[_mm512_setzero_ps(); N]; M];
            if !first {
                for (i, ai) in acc.iter_mut().enumerate() {
                    for (j, a) in ai.iter_mut().enumerate() {
                        *a = _mm512_loadu_ps(c.add(i * NR * ROWS + j * ROWS));
                    }
                }
            }
            for k in 0..kc {
                let mut wv = [_mm512_setzero_ps(); N];
                for (j, v) in wv.iter_mut().enumerate() {
                    *v = _mm512_loadu_ps(w.add(j * gs + k * ROWS));
                }
                for (i, ai) in acc.iter_mut().enumerate() {
                    let b = _mm512_set1_ps(*x[i].add(k));
                    for (a, &v) in ai.iter_mut().zip(&wv) {
                        *a = _mm512_fmadd_ps(b, v, *a);
                    }
                }
            }
            for (i, ai) in acc.iter().enumerate() {
                for (j, a) in ai.iter().enumerate() {
                    _mm512_storeu_ps(c.add(i * NR * ROWS + j * ROWS), *a);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x256 {
    use super::{NR, ROWS};
    use std::arch::x86_64::*;

    /// `M` activation rows (`x[i]`, `kc` columns) by one panel (`w`) into `c` (rows 64 floats
    /// apart), each panel row half a register.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile<const M: usize>(
        x: [*const f32; M],
        w: &[f32],
        c: &mut [f32],
        kc: usize,
        first: bool,
    ) {
        unsafe {
            let (w, c) = (w.as_ptr(), c.as_mut_ptr());
            let mut acc = [[_mm256_setzero_ps(); 2]; M];
            if !first {
                for (i, ai) in acc.iter_mut().enumerate() {
                    for (h, a) in ai.iter_mut().enumerate() {
                        *a = _mm256_loadu_ps(c.add(i * NR * ROWS + 8 * h));
                    }
                }
            }
            for k in 0..kc {
                let w0 = _mm256_loadu_ps(w.add(k * ROWS));
                let w1 = _mm256_loadu_ps(w.add(k * ROWS + 8));
                for (i, ai) in acc.iter_mut().enumerate() {
                    let b = _mm256_set1_ps(*x[i].add(k));
                    ai[0] = _mm256_fmadd_ps(b, w0, ai[0]);
                    ai[1] = _mm256_fmadd_ps(b, w1, ai[1]);
                }
            }
            for (i, ai) in acc.iter().enumerate() {
                for (h, a) in ai.iter().enumerate() {
                    _mm256_storeu_ps(c.add(i * NR * ROWS + 8 * h), *a);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, cols: usize, seed: usize) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| (((i * 37 + seed * 11) % 101) as f32 - 50.0) / 31.0)
            .collect()
    }

    /// The chain every result is: `x · w` in column order, one rounding per step.
    fn chain(w: &[f32], x: &[f32]) -> f32 {
        w.iter()
            .zip(x)
            .fold(0.0f32, |acc, (&wv, &xv)| xv.mul_add(wv, acc))
    }

    /// Panel products equal the one-chain dot product bit for bit for shapes with partial
    /// panels and tiles, several column passes and a partial last one, every count of
    /// activation rows (alone or with others), on every kernel this CPU runs; rows read back.
    #[test]
    fn panel_products_are_the_column_chain_on_every_kernel() {
        let mut kernels = vec![Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if crate::kernels::has_avx2() {
                kernels.push(Kernel::Avx2);
            }
            if crate::kernels::has_avx512f() {
                kernels.push(Kernel::Avx512);
            }
        }
        for (rows, cols) in [(21, 40), (100, 2 * KC + 37), (64, KC)] {
            let w = matrix(rows, cols, rows);
            let p = Panels::new(&w, rows, cols, &Slab::new(1 << 20));
            for r in [0, rows / 2, rows - 1] {
                assert_eq!(p.row(r), w[r * cols..(r + 1) * cols]);
            }
            let acts: Vec<Vec<f32>> = (0..13).map(|c| matrix(1, cols, c + 3)).collect();
            let want: Vec<Vec<u32>> = acts
                .iter()
                .map(|x| {
                    (0..rows)
                        .map(|r| chain(&w[r * cols..(r + 1) * cols], x).to_bits())
                        .collect()
                })
                .collect();
            let bits = |o: &[Vec<f32>]| -> Vec<Vec<u32>> {
                o.iter()
                    .map(|r| r.iter().map(|v| v.to_bits()).collect())
                    .collect()
            };
            // Through `matmul` (this CPU's kernel), every batch size from 1 to 13 rows.
            for m in 1..=acts.len() {
                let mut out = vec![vec![]; m];
                p.matmul(&acts[..m], &mut out);
                assert_eq!(bits(&out), want[..m], "{rows}×{cols}, {m} rows");
            }
            // Each kernel on its own, every tile shape.
            for &k in &kernels {
                for n in 1..=NR.min(rows.div_ceil(ROWS)) {
                    for mr in 1..=MR {
                        let x: Vec<&[f32]> = acts[..mr].iter().map(|r| &r[..]).collect();
                        let mut c = vec![f32::NAN; mr * NR * ROWS];
                        k.run(p.data.f32s(), cols * ROWS, n, &x, &mut c, true);
                        for i in 0..mr {
                            for r in 0..(n * ROWS).min(rows) {
                                assert_eq!(
                                    c[i * NR * ROWS + r].to_bits(),
                                    want[i][r],
                                    "{k:?} {rows}×{cols} n {n} mr {mr} row {r}"
                                );
                            }
                        }
                    }
                }
            }
        }
        eprintln!("panel kernels compared: {kernels:?}");
    }
}
