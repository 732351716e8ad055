//! A safe wrapper over the `gemm` crate (the GEMM burn-flex itself uses) for strided matrices.

/// A read-only matrix view: `data[r * rs + c * cs]` for `r < rows`, `c < cols`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    pub fn new(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        let m = Mat {
            data,
            rows,
            cols,
            rs,
            cs,
        };
        m.check(data.len());
        m
    }

    /// Row-major, densely packed.
    pub fn dense(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols, 1)
    }

    /// Rows `r0..r0 + rows` of the view.
    pub fn rows(self, r0: usize, rows: usize) -> Self {
        Mat::new(
            &self.data[r0 * self.rs..],
            rows,
            self.cols,
            self.rs,
            self.cs,
        )
    }

    /// Columns `c0..c0 + cols` of the view.
    pub fn cols(self, c0: usize, cols: usize) -> Self {
        Mat::new(
            &self.data[c0 * self.cs..],
            self.rows,
            cols,
            self.rs,
            self.cs,
        )
    }

    pub fn t(self) -> Self {
        Mat {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            data: self.data,
        }
    }

    fn check(&self, len: usize) {
        if self.rows > 0 && self.cols > 0 {
            let last = (self.rows - 1) * self.rs + (self.cols - 1) * self.cs;
            assert!(last < len, "matrix view out of bounds");
        }
    }
}

/// `c (m×n, row-major, row stride ldc) = [c if accumulate] + alpha * a · b`, single-threaded
/// (callers parallelise over heads).
pub fn matmul(c: &mut [f32], ldc: usize, accumulate: bool, a: Mat<'_>, b: Mat<'_>, alpha: f32) {
    // SAFETY: `c` is borrowed mutably for the whole call, so nothing else reaches it.
    unsafe { matmul_shared(Shared::new(c), 0, ldc, accumulate, a, b, alpha) }
}

/// The gemm crate's product into `c`, read only when `accumulate`.
///
/// # Safety
/// `c` must be valid for writes (and reads, if `accumulate`) at `r * ldc + j` for every
/// `r < a.rows`, `j < b.cols`, must not overlap `a` or `b`, and `a.cols == b.rows > 0`.
unsafe fn gemm_raw(c: *mut f32, ldc: usize, accumulate: bool, a: Mat<'_>, b: Mat<'_>, alpha: f32) {
    // SAFETY: the caller's contract; the views are in bounds by construction (`Mat::new`).
    unsafe {
        gemm::gemm(
            a.rows,
            b.cols,
            a.cols,
            c,
            1,
            ldc as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// An output buffer that parallel tasks write through at disjoint places (attention's heads
/// write their rows straight into the `(B, T, H, D)` layout, interleaved with other heads').
#[derive(Clone, Copy)]
pub struct Shared {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: a `Shared` is only written through `matmul_shared`, whose callers guarantee that no
// two tasks touch the same element; the buffer outlives the tasks (it is borrowed in `new`).
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    pub fn new(buf: &mut [f32]) -> Self {
        Shared {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
        }
    }
}

/// [`matmul`] into `out` from element `start`, with row stride `ldc`.
///
/// # Safety
/// While it runs, no other task may read or write the elements it reaches
/// (`start + r * ldc + j` for `r < a.rows`, `j < b.cols`), and the buffer `out` was made from
/// must still be borrowed by the caller.
pub unsafe fn matmul_shared(
    out: Shared,
    start: usize,
    ldc: usize,
    accumulate: bool,
    a: Mat<'_>,
    b: Mat<'_>,
    alpha: f32,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "inner dimensions");
    if m == 0 || n == 0 {
        return;
    }
    assert!(start + (m - 1) * ldc + n <= out.len, "output out of bounds");
    // SAFETY: in bounds (checked above); exclusive access is the caller's contract.
    unsafe {
        let c = out.ptr.add(start);
        if k == 0 {
            if !accumulate {
                for r in 0..m {
                    std::slice::from_raw_parts_mut(c.add(r * ldc), n).fill(0.0);
                }
            }
            return;
        }
        gemm_raw(c, ldc, accumulate, a, b, alpha)
    }
}

/// `a · b` as a new dense row-major `m×n` vector, on all of rayon's threads: the output is
/// cut into one block per thread along its longer side (rows, or columns when it is wider
/// than tall: the weight gradients `xᵀ·dy` of wide layers), each block a single-threaded
/// product. The gemm crate's own threading reached ~1.3 of 2 cores at the backward pass's
/// long-k shapes (k = B·T), and this way two products can also run side by side in one pool
/// without oversubscribing it. The buffer is not zeroed first: the products write every
/// element (zeroing the outputs was 4% of a training step, on the thread driving the graph).
pub fn product_par(a: Mat<'_>, b: Mat<'_>) -> Vec<f32> {
    use rayon::prelude::*;
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "inner dimensions");
    if m == 0 || n == 0 || k == 0 {
        return vec![0.0; m * n];
    }
    let threads = rayon::current_num_threads();
    let mut c: Vec<f32> = Vec::with_capacity(m * n);
    let spare = &mut c.spare_capacity_mut()[..m * n];
    if n > m {
        let parts = threads.min(n.div_ceil(64)).max(1);
        let cols = n.div_ceil(parts);
        let out = Shared {
            ptr: spare.as_mut_ptr().cast(),
            len: m * n,
        };
        (0..parts).into_par_iter().for_each(|i| {
            let (c0, w) = (i * cols, cols.min(n - (i * cols).min(n)));
            if w > 0 {
                let bi = b.cols(c0, w);
                // SAFETY: block i alone writes columns c0..c0 + w of every row; `c` is
                // borrowed until the tasks end.
                unsafe { matmul_shared(out, c0, n, false, a, bi, 1.0) }
            }
        });
    } else {
        let parts = threads.min(m.div_ceil(32)).max(1);
        let rows = m.div_ceil(parts);
        spare
            .par_chunks_mut(rows * n)
            .enumerate()
            .for_each(|(i, block)| {
                let r = block.len() / n;
                // SAFETY: the block holds exactly r dense rows of n (ldc = n), is this task's own,
                // and is fresh memory apart from a and b; inner dimension checked above.
                unsafe {
                    gemm_raw(
                        block.as_mut_ptr().cast(),
                        n,
                        false,
                        a.rows(i * rows, r),
                        b,
                        1.0,
                    )
                }
            });
    }
    // SAFETY: the blocks cover all m·n elements and the products wrote every one of them.
    unsafe { c.set_len(m * n) };
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_product_by_hand() {
        // [1 2; 3 4] · [5 6; 7 8] = [19 22; 43 50]; with b transposed through strides.
        let a = [1.0, 2.0, 3.0, 4.0];
        let bt = [5.0, 7.0, 6.0, 8.0];
        let mut c = [1.0; 4];
        matmul(
            &mut c,
            2,
            false,
            Mat::dense(&a, 2, 2),
            Mat::dense(&bt, 2, 2).t(),
            1.0,
        );
        assert_eq!(c, [19.0, 22.0, 43.0, 50.0]);
        matmul(
            &mut c,
            2,
            true,
            Mat::dense(&a, 2, 2),
            Mat::dense(&bt, 2, 2).t(),
            0.5,
        );
        assert_eq!(c, [28.5, 33.0, 64.5, 75.0]);
    }

    #[test]
    fn threaded_product_equals_one_block() {
        // 70 rows (three blocks on two threads would be uneven): every element is the same dot
        // product in both, so the results are equal exactly.
        let (m, k, n) = (70, 9, 5);
        let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.25 - 1.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.5 - 1.5).collect();
        let mut one = vec![0f32; m * n];
        matmul(
            &mut one,
            n,
            false,
            Mat::dense(&a, m, k),
            Mat::dense(&b, k, n),
            1.0,
        );
        assert_eq!(one, product_par(Mat::dense(&a, m, k), Mat::dense(&b, k, n)));
        // A transposed view is cut the same way.
        let at: Vec<f32> = (0..k * m).map(|i| (i % 11) as f32 * 0.5 - 2.0).collect();
        matmul(
            &mut one,
            n,
            false,
            Mat::dense(&at, k, m).t(),
            Mat::dense(&b, k, n),
            1.0,
        );
        let par = product_par(Mat::dense(&at, k, m).t(), Mat::dense(&b, k, n));
        assert_eq!(one, par);
        // Wider than tall: cut into column blocks (the second view transposed, 150 columns).
        let (m, n) = (5, 150);
        let bt: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 * 0.75 - 1.0).collect();
        let mut one = vec![0f32; m * n];
        let (av, bv) = (Mat::dense(&a, m, k), Mat::dense(&bt, n, k).t());
        matmul(&mut one, n, false, av, bv, 1.0);
        assert_eq!(one, product_par(av, bv));
    }
}
