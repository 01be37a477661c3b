//! The memory of a long-lived process (a campaign worker, the soak): the allocator, its
//! figures, and the bounds on libtorch's kernel caches that keep the heap flat.

/// jemalloc is the process's malloc, libtorch's allocations included (the crate exports the
/// unprefixed `malloc` family, which the executable's symbols give precedence over glibc's):
/// a case allocates and frees thousands of small tensors, and glibc's malloc, free and
/// consolidation were about a tenth of a MoE case's time (docs/guide.md, Speed).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// What the C allocator holds, in MiB: `used` is in live allocations, `free` is resident but
/// not allocated (freed and still held, and the allocator's own metadata).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HeapStats {
    pub used_mib: f64,
    pub free_mib: f64,
}

const MIB: f64 = 1024.0 * 1024.0;

/// jemalloc's figures (`stats.allocated`, `stats.resident`, refreshed first); `None` where it
/// cannot give them.
pub fn stats() -> Option<HeapStats> {
    use tikv_jemalloc_ctl::{epoch, stats};
    epoch::advance().ok()?;
    let (used, resident) = (stats::allocated::read().ok()?, stats::resident::read().ok()?);
    Some(HeapStats { used_mib: used as f64 / MIB, free_mib: resident.saturating_sub(used) as f64 / MIB })
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
