//! Weight matrices as GGUF inference holds them — mapped from the file, repacked for the SIMD
//! kernels, or widened — and their products with a pass's activation rows.

use crate::error::{GgufError, Result};
use crate::format::{GgufFile, TensorInfo};
use crate::kernels::{
    Q8Row, dot_q4_0, dot_q8_0, dot4_q4_0, dot4_q8_0, dots_f32, rows4_q4_0, rows4_q8_0,
};
use crate::packed::Packed;
use crate::pages::Slab;
use crate::panels::Panels;
use crate::quant::{self, GgmlType, QK};
use rayon::prelude::*;
use std::sync::Arc;

/// A weight matrix of `rows` rows of `cols` values.
pub enum Mat {
    /// In the mapped file: q8_0, q4_0 or f32; q8_0 and q4_0 also repacked where the CPU runs
    /// the packed kernels (x86 with AVX2 or AVX-512 VNNI: products from the packed copy, the
    /// mapped pages handed back).
    Mapped {
        t: TensorInfo,
        rows: usize,
        cols: usize,
        packed: Option<Packed>,
    },
    /// f32 in panels of sixteen rows ([`Panels`]; f32 files, f16 and bf16 ones widened), where
    /// the CPU runs the panel kernels (x86 with AVX2): `ty` is the file's type.
    Panels { p: Panels, ty: GgmlType },
    /// Widened to f32 at load (f16 and bf16 files on other CPUs).
    Owned {
        data: Vec<f32>,
        rows: usize,
        cols: usize,
    },
}

impl Mat {
    pub fn rows(&self) -> usize {
        match self {
            Mat::Mapped { rows, .. } | Mat::Owned { rows, .. } => *rows,
            Mat::Panels { p, .. } => p.rows,
        }
    }
    pub fn cols(&self) -> usize {
        match self {
            Mat::Mapped { cols, .. } | Mat::Owned { cols, .. } => *cols,
            Mat::Panels { p, .. } => p.cols,
        }
    }
    pub fn ty(&self) -> GgmlType {
        match self {
            Mat::Mapped { t, .. } => t.ty,
            Mat::Panels { ty, .. } => *ty,
            Mat::Owned { .. } => GgmlType::F32,
        }
    }
    /// Row `r` as f32 (an embedding lookup).
    pub fn row(&self, f: &GgufFile, r: usize) -> Vec<f32> {
        match self {
            Mat::Owned { data, cols, .. } => data[r * cols..(r + 1) * cols].to_vec(),
            Mat::Panels { p, .. } => p.row(r),
            Mat::Mapped { t, cols, .. } => {
                let rb = t.ty.row_bytes(*cols).expect("checked at load");
                quant::decode(t.ty, &f.bytes(t)[r * rb..(r + 1) * rb]).expect("checked at load")
            }
        }
    }

    /// `rows × Wᵀ`: one output row per activation row, output rows split across threads.
    pub fn matmul(&self, file: &GgufFile, a: &Act) -> Vec<Vec<f32>> {
        let w = self;
        let (rows, cols) = (w.rows(), w.cols());
        let t = match a {
            Act::F32(x) => x.len(),
            Act::Q8(x) => x.len(),
        };
        if let (
            Mat::Mapped {
                packed: Some(p), ..
            },
            Act::Q8(x),
        ) = (w, a)
        {
            let mut out = vec![vec![]; t];
            p.matmul(x, &mut out);
            return out;
        }
        if let (Mat::Panels { p, .. }, Act::F32(x)) = (w, a) {
            let mut out = vec![vec![]; t];
            p.matmul(x, &mut out);
            return out;
        }
        // Decoding (one activation row): four weight rows at a time share its loads.
        if t == 1
            && let (Mat::Mapped { t: ti, .. }, Act::Q8(x)) = (w, a)
        {
            return vec![matvec_q(file.bytes(ti), ti, cols, &x[0])];
        }
        let chunk = 16usize;
        // [row][t], then transposed to [t][row].
        let mut by_row = vec![0.0f32; rows * t];
        // Activations in tiles that stay in cache while a chunk of weight rows passes over them.
        const TILE: usize = 32;
        by_row
            .par_chunks_mut(chunk * t)
            .enumerate()
            .for_each(|(ci, out)| {
                let r0 = ci * chunk;
                for t0 in (0..t).step_by(TILE) {
                    let t1 = (t0 + TILE).min(t);
                    if let (Mat::Mapped { t: ti, .. }, Act::Q8(x)) = (w, a) {
                        let rb = ti.ty.row_bytes(cols).expect("checked at load");
                        let bytes = &file.bytes(ti)[r0 * rb..];
                        q_tile(ti.ty, bytes, rb, &x[t0..t1], out, t, t0);
                        continue;
                    }
                    // f32 activations: f32 weights, in the file or widened at load.
                    let Act::F32(x) = a else {
                        unreachable!("activations are made for the matrix's type")
                    };
                    let row = |r: usize| -> &[f32] {
                        match w {
                            Mat::Owned { data, .. } => &data[r * cols..(r + 1) * cols],
                            Mat::Mapped { t: ti, .. } => {
                                bytemuck_f32(&file.bytes(ti)[r * cols * 4..(r + 1) * cols * 4])
                            }
                            Mat::Panels { .. } => unreachable!("panels take their own path"),
                        }
                    };
                    f32_tile(&row, r0, out, t, &x[t0..t1], t0);
                }
            });
        if t == 1 {
            return vec![by_row];
        }
        (0..t)
            .map(|i| (0..rows).map(|r| by_row[r * t + i]).collect())
            .collect()
    }
}

/// Activations in the form a matrix's kernel takes.
pub enum Act {
    F32(Vec<Vec<f32>>),
    Q8(Vec<Q8Row>),
}

impl Act {
    /// The activation rows as the matrices' kernels take them (all of one kind per call).
    pub fn new(rows: &[Vec<f32>], mats: &[&Mat]) -> Act {
        if mats.iter().all(|m| m.ty().is_quantized()) {
            let quantize = |r: &Vec<f32>| {
                let mut q = Q8Row::default();
                q.quantize(r);
                q
            };
            // A prompt's rows side by side (one row: no hand-off).
            Act::Q8(if rows.len() > 1 {
                rows.par_iter().map(quantize).collect()
            } else {
                rows.iter().map(quantize).collect()
            })
        } else {
            Act::F32(rows.to_vec())
        }
    }
}

/// `W x` for one q8_0-quantized activation row and a q8_0/q4_0 matrix in the file.
fn matvec_q(bytes: &[u8], ti: &TensorInfo, cols: usize, x: &Q8Row) -> Vec<f32> {
    let rows = ti.len() / cols;
    let rb = ti.ty.row_bytes(cols).expect("checked at load");
    let four = if ti.ty == GgmlType::Q8_0 {
        rows4_q8_0
    } else {
        rows4_q4_0
    };
    let one = if ti.ty == GgmlType::Q8_0 {
        dot_q8_0
    } else {
        dot_q4_0
    };
    let mut out = vec![0.0f32; rows];
    // Four chunks per thread: few hand-offs, yet a late thread leaves work to steal.
    let chunk = rows.div_ceil(4 * rayon::current_num_threads()).div_ceil(4) * 4;
    out.par_chunks_mut(chunk).enumerate().for_each(|(ci, o)| {
        let r0 = ci * chunk;
        let row = |r: usize| &bytes[r * rb..(r + 1) * rb];
        let n4 = o.len() / 4 * 4;
        for k in (0..n4).step_by(4) {
            let r = r0 + k;
            o[k..k + 4].copy_from_slice(&four([row(r), row(r + 1), row(r + 2), row(r + 3)], x));
        }
        for (k, ok) in o.iter_mut().enumerate().skip(n4) {
            *ok = one(row(r0 + k), x);
        }
    });
    out
}

/// An f32 tensor's bytes as f32 values (the mapped file is page-aligned and GGUF aligns each
/// tensor to 32 bytes, so the cast holds).
fn bytemuck_f32(b: &[u8]) -> &[f32] {
    assert_eq!(
        b.as_ptr() as usize % 4,
        0,
        "f32 tensor data is 4-byte aligned"
    );
    // SAFETY: alignment checked above, length a multiple of 4 (f32 row bytes), any bit pattern
    // is a valid f32, and the slice borrows the mapped file for its lifetime.
    unsafe { std::slice::from_raw_parts(b.as_ptr() as *const f32, b.len() / 4) }
}

/// Room enough for every matrix of `f` repacked (address space: only what packing writes
/// becomes resident).
pub fn slab_for(f: &GgufFile) -> Arc<Slab> {
    let cap = f
        .tensors
        .iter()
        .filter(|t| t.dims.len() == 2)
        .map(|t| {
            let (cols, rows) = (t.dims[0] as usize, t.dims[1] as usize);
            let size = match t.ty {
                GgmlType::Q8_0 => Packed::size(false, rows, cols),
                GgmlType::Q4_0 => Packed::size(true, rows, cols),
                _ => Panels::size(rows, cols),
            };
            size + 64
        })
        .sum();
    Slab::new(cap)
}

/// Tensor `name` as a `rows × cols` matrix; repacked (q8_0/q4_0 interleaved, f32/f16/bf16 in
/// panels, in `pack`'s memory) when `pack` is given and the CPU runs the packed kernels.
pub fn load_mat(
    f: &GgufFile,
    name: &str,
    rows: usize,
    cols: usize,
    pack: Option<&Arc<Slab>>,
) -> Result<Mat> {
    let pack = pack.filter(|_| crate::kernels::has_packed());
    let t = f
        .tensor(name)
        .ok_or_else(|| GgufError::model(&f.path, format!("tensor {name} is missing")))?
        .clone();
    let want: Vec<u64> = if rows == 1 {
        vec![cols as u64]
    } else {
        vec![cols as u64, rows as u64]
    };
    let got: Vec<u64> = t
        .dims
        .iter()
        .copied()
        .filter(|&x| x != 1 || want.len() == 2)
        .collect();
    if got != want {
        return Err(GgufError::model(
            &f.path,
            format!(
                "tensor {name} has dims {:?}, the metadata says {want:?}",
                t.dims
            ),
        ));
    }
    match t.ty {
        GgmlType::Q8_0 | GgmlType::Q4_0 if cols.is_multiple_of(QK) => {
            let packed = pack.map(|slab| {
                let p = Packed::new(t.ty, f.bytes(&t), rows, cols, slab);
                f.release(&t);
                p
            });
            Ok(Mat::Mapped {
                t,
                rows,
                cols,
                packed,
            })
        }
        GgmlType::F32 if let Some(slab) = pack => {
            let p = Panels::new(bytemuck_f32(f.bytes(&t)), rows, cols, slab);
            f.release(&t);
            Ok(Mat::Panels { p, ty: t.ty })
        }
        GgmlType::F32 => Ok(Mat::Mapped {
            t,
            rows,
            cols,
            packed: None,
        }),
        GgmlType::F16 | GgmlType::Bf16 => {
            let data = quant::decode(t.ty, f.bytes(&t)).expect("f16/bf16 decode");
            if let Some(slab) = pack {
                let p = Panels::new(&data, rows, cols, slab);
                return Ok(Mat::Panels { p, ty: t.ty });
            }
            Ok(Mat::Owned { data, rows, cols })
        }
        other => Err(GgufError::model(
            &f.path,
            format!(
                "tensor {name} is {}: cria runs f32, f16, bf16, q8_0 and q4_0 weights",
                other.name()
            ),
        )),
    }
}

/// The weight rows in `w` (`rb` bytes each, as many as `out` has rows of `t`) against
/// activation rows `x` (rows `t0..` of the pass): each weight row against four activation rows
/// at a time, the rest one by one (the kernels add a pair's products in the same order).
fn q_tile(ty: GgmlType, w: &[u8], rb: usize, x: &[Q8Row], out: &mut [f32], t: usize, t0: usize) {
    type Four = fn(&[u8], [&Q8Row; 4]) -> [f32; 4];
    type One = fn(&[u8], &Q8Row) -> f32;
    let (four, one): (Four, One) = match ty {
        GgmlType::Q8_0 => (dot4_q8_0, dot_q8_0),
        GgmlType::Q4_0 => (dot4_q4_0, dot_q4_0),
        other => unreachable!("q8 activations meet {other:?} weights"),
    };
    let n4 = x.len() / 4 * 4;
    for (k, o) in out.chunks_mut(t).enumerate() {
        let wr = &w[k * rb..(k + 1) * rb];
        let o = &mut o[t0..t0 + x.len()];
        for j in (0..n4).step_by(4) {
            o[j..j + 4].copy_from_slice(&four(wr, [&x[j], &x[j + 1], &x[j + 2], &x[j + 3]]));
        }
        for j in n4..x.len() {
            o[j] = one(wr, &x[j]);
        }
    }
}

/// Weight rows `r0..` (`row(r)`, as many as `out` has rows of `t`) against activation rows
/// `x` (rows `t0..` of the pass): four weight rows by two activation rows at a time.
fn f32_tile<'a>(
    row: &dyn Fn(usize) -> &'a [f32],
    r0: usize,
    out: &mut [f32],
    t: usize,
    x: &[Vec<f32>],
    t0: usize,
) {
    let nrows = out.len() / t;
    let mut k = 0;
    while k < nrows {
        let rn = (nrows - k).min(4);
        let mut j = 0;
        while j < x.len() {
            let cn = (x.len() - j).min(2);
            let (a0, a1) = (&x[j][..], &x[(j + 1).min(x.len() - 1)][..]);
            let mut put = |r: usize, c: usize, v: f32| out[(k + r) * t + t0 + j + c] = v;
            macro_rules! tile {
                ($($r:literal),+; $($c:ident),+) => {{
                    let p = dots_f32([$(row(r0 + k + $r)),+], [$($c),+]);
                    for (r, pr) in p.iter().enumerate() {
                        for (c, v) in pr.iter().enumerate() {
                            put(r, c, *v);
                        }
                    }
                }};
            }
            match (rn, cn) {
                (4, 2) => tile!(0, 1, 2, 3; a0, a1),
                (4, _) => tile!(0, 1, 2, 3; a0),
                (3, 2) => tile!(0, 1, 2; a0, a1),
                (3, _) => tile!(0, 1, 2; a0),
                (2, 2) => tile!(0, 1; a0, a1),
                (2, _) => tile!(0, 1; a0),
                (_, 2) => tile!(0; a0, a1),
                _ => tile!(0; a0),
            }
            j += cn;
        }
        k += rn;
    }
}
