//! How freed tensor memory is kept: glibc's `malloc` returns large freed blocks to the
//! operating system at once (blocks above a 128 KiB threshold are `mmap`ed and `munmap`ed,
//! and the heap's top is trimmed past 128 KiB), so a training step that frees and allocates
//! the same activations every step pays a page fault and a zeroed page for every 4 KiB of
//! them, every step. Keeping freed memory in the process removes that cost; the price is
//! that the process's resident size stays at its peak (as with PyTorch's caching allocator
//! on a GPU).

use std::sync::OnceLock;

/// The largest block served from the heap rather than by its own `mmap` (glibc's maximum on
/// 64-bit targets): 32 MiB.
const MMAP_THRESHOLD: i32 = 32 << 20;

/// The first call's outcome, which every later call reports.
static APPLIED: OnceLock<bool> = OnceLock::new();

/// Keeps freed memory in the process for reuse: glibc's `mallopt(M_MMAP_THRESHOLD, 32 MiB)`
/// and `mallopt(M_TRIM_THRESHOLD, 2³¹ − 1)`. Returns whether the settings were applied
/// (false on other C libraries and platforms, where nothing is changed; or when the
/// environment variable `TAPER_MALLOC=system` asks to leave `malloc` as it is). The first
/// call decides: it reads `TAPER_MALLOC` and calls `mallopt`, and every later call returns
/// its outcome without doing either again.
///
/// It takes full effect only before the process's first large allocations: with the MNIST
/// subset loaded first, 30 training steps of `bench_cnn`'s 3x3Net made 158,000 page faults
/// and ran about 15 ms a step slower than with this called first (30,000 faults; measured
/// with `perf stat -e page-faults`). So Taper calls it at each of its entry points:
/// [`ParamStore::new`](crate::ParamStore::new) for a CPU store,
/// [`park_idle_candle_workers`](crate::park_idle_candle_workers),
/// [`on_thread_pool`](crate::on_thread_pool) and the IDX loader, and training scripts get
/// it without asking; a script that allocates large buffers of its own before any of those
/// calls it first thing in `main`. On this machine it takes the `char_gpt` example's training
/// from about 2,300 to 3,700 tokens/s (see the README's performance section); glibc's
/// `GLIBC_TUNABLES` still override it.
///
/// ```
/// // Idempotent: the second call changes nothing and reports the same.
/// assert_eq!(taper_tensor::retain_freed_memory(), taper_tensor::retain_freed_memory());
/// ```
pub fn retain_freed_memory() -> bool {
    *APPLIED.get_or_init(|| {
        if std::env::var("TAPER_MALLOC").is_ok_and(|v| v == "system") {
            return false;
        }
        apply()
    })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> bool {
    // SAFETY: mallopt only changes glibc's allocation thresholds; it is thread-safe (it takes
    // the arena locks) and valid at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> bool {
    false
}
