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
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "inner dimensions");
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * ldc + n <= c.len(), "output out of bounds");
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                c[r * ldc..r * ldc + n].fill(0.0);
            }
        }
        return;
    }
    // SAFETY: every view was bounds-checked above for its strides and extents; `c` is borrowed
    // mutably and cannot alias the shared inputs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
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
}
