//! The memory of a long-lived process (a campaign worker, the soak): the C heap's figures, and
//! the bounds on libtorch's kernel caches that keep it flat.

/// What the C allocator holds, in MiB: `used` is in live allocations (heap and mmapped
/// chunks), `free` is freed but still held by the allocator.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HeapStats {
    pub used_mib: f64,
    pub free_mib: f64,
}

const MIB: f64 = 1024.0 * 1024.0;

/// The allocator's figures (`mallinfo2`); `None` where the C library is not glibc.
pub fn stats() -> Option<HeapStats> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 has no preconditions; it only reads the allocator's counters.
        let m = unsafe { libc::mallinfo2() };
        Some(HeapStats { used_mib: (m.uordblks + m.hblkhd) as f64 / MIB, free_mib: m.fordblks as f64 / MIB })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// libtorch's CPU matmuls in bfloat16 (the MoE subject's experts) go through oneDNN, which
/// compiles a kernel per shape and keeps it twice: in ideep's per-thread LRU cache
/// (`LRU_CACHE_CAPACITY`) and in oneDNN's primitive cache (`ONEDNN_PRIMITIVE_CACHE_CAPACITY`),
/// 1024 entries each by default. A campaign draws new shapes all the time, so both fill up to
/// their capacity, at a few hundred KiB per kernel: over 100 MiB of heap that grows for the
/// first tens of thousands of cases (the soak's memory growth, docs/soak.md). 64 kernels cover
/// the shapes that repeat within a case; back-to-back soaks showed no loss of speed.
const LIBRARY_CACHES: [(&[&str], &str); 2] =
    [(&["LRU_CACHE_CAPACITY"], "64"), (&["ONEDNN_PRIMITIVE_CACHE_CAPACITY", "DNNL_PRIMITIVE_CACHE_CAPACITY"], "64")];

/// Bounds libtorch's kernel caches (see [`LIBRARY_CACHES`]) unless the user set them; call
/// before the first tensor op and before any thread starts (the libraries read the variables
/// once, on first use).
pub fn bound_library_caches() {
    for (vars, capacity) in LIBRARY_CACHES {
        if vars.iter().all(|v| std::env::var_os(v).is_none()) {
            std::env::set_var(vars[0], capacity);
        }
    }
}
