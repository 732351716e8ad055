//! The process allocator: mimalloc with purging disabled. A training step allocates and frees
//! the same large activation buffers every step; glibc (and mimalloc's default) hand them back
//! to the OS and the next step pays page faults and zeroing for them again (~10% of a step in
//! the profile). Keeping freed memory mapped makes steps measurably faster; peak RSS is
//! unchanged because the same buffers are reused.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in the mimalloc v3 sources libmimalloc-sys builds (the crate's own
/// constants follow the v2 numbering).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// `mi_option_allow_thp` in the same sources.
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

/// Never return freed memory to the OS during the run, and do not ask for transparent huge
/// pages for the heap (`CRIA_HEAP_THP=1` asks, to compare): where the system leaves them to
/// `madvise` (Debian's default), the heap's huge pages had rounded a GGUF model's buffers up
/// (peak RSS 25 MiB more on a 91M f32 file, 11 MiB on its q4_0 one) and slowed f32 prompts
/// ~12%; training steps and checkpoint decoding measured the same either way. Repacked GGUF
/// weights still ask for huge pages, all in one stretch (`cria_gguf::pages`).
pub fn keep_freed_memory() {
    // SAFETY: sets process-wide integer options; mimalloc reads options atomically.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        if std::env::var_os("CRIA_HEAP_THP").is_none() {
            libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0);
        }
    }
}
