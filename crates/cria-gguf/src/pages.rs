//! One stretch of memory for a model's repacked weights, asked for as transparent huge pages.
//! Decoding streams every weight once a token; in 2 MiB pages the TLB does not miss every
//! 4 KiB (with the weights in 4 KiB pages a 91M q4_0 file decoded ~18% slower). Matrices are
//! laid end to end in it, so the huge pages are not rounded up per matrix: the space is
//! reserved for the largest the model can need and only what is written becomes resident.

use memmap2::MmapMut;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Where the regions of one model's weights are cut from.
pub struct Slab {
    /// Owns the mapping; every access goes through `base`.
    _map: MmapMut,
    /// The mapping's start, taken from its unique borrow at creation.
    base: *mut u8,
    cap: usize,
    used: AtomicUsize,
}

// SAFETY: `base` points into the mapping the slab owns; regions never overlap, and each is
// written only through its own `&mut` before any reader shares it.
unsafe impl Send for Slab {}
unsafe impl Sync for Slab {}

/// `len` bytes of a [`Slab`], written once while the matrix is packed, then read.
pub struct Region {
    slab: Arc<Slab>,
    at: usize,
    len: usize,
}

/// Regions start at multiples of this (a cache line, and whole f32 values).
const ALIGN: usize = 64;

impl Slab {
    /// Reserves `cap` bytes (address space only until written).
    pub fn new(cap: usize) -> Arc<Slab> {
        let mut map = MmapMut::map_anon(cap.max(1)).expect("address space for repacked weights");
        #[cfg(target_os = "linux")]
        // Advice only: without transparent huge pages the weights work the same.
        let _ = map.advise(memmap2::Advice::HugePage);
        Arc::new(Slab {
            base: map.as_mut_ptr(),
            _map: map,
            cap,
            used: AtomicUsize::new(0),
        })
    }

    /// The next `len` zeroed bytes.
    pub fn take(self: &Arc<Self>, len: usize) -> Region {
        let at = self
            .used
            .fetch_add(len.div_ceil(ALIGN) * ALIGN, Ordering::Relaxed);
        assert!(
            at + len <= self.cap,
            "repacked weights past the space reserved for them"
        );
        Region {
            slab: self.clone(),
            at,
            len,
        }
    }
}

impl Region {
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `at..at + len` lies inside the mapping (`take`), which lives as long as the
        // slab this region holds; no one writes it once the region is shared.
        unsafe { std::slice::from_raw_parts(self.slab.base.add(self.at), self.len) }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; regions never overlap (`take` hands each range out once) and
        // a region is only borrowed through itself, so this is the only reference to them.
        unsafe { std::slice::from_raw_parts_mut(self.slab.base.add(self.at), self.len) }
    }

    /// The region as f32 values (it starts 64-byte aligned in a page-aligned mapping).
    pub fn f32s(&self) -> &[f32] {
        let b = self.bytes();
        // SAFETY: aligned as above; any bits are a valid f32.
        unsafe { std::slice::from_raw_parts(b.as_ptr().cast(), b.len() / 4) }
    }

    pub fn f32s_mut(&mut self) -> &mut [f32] {
        let b = self.bytes_mut();
        // SAFETY: as in `f32s`.
        unsafe { std::slice::from_raw_parts_mut(b.as_mut_ptr().cast(), b.len() / 4) }
    }
}
