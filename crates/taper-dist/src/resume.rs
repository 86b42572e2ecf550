//! Resuming a data-parallel run on another number of ranks: where in the epoch it continues.

/// The batch to resume at when a run that consumed `batches` per-rank batches of an epoch
/// with global batch `old_global` (ranks × per-rank batch) continues with global batch
/// `new_global`: the same example position, rounded down to a whole new batch.
///
/// ```
/// // 2 ranks × 32 stopped after 10 batches (640 examples): 1 rank × 64 resumes at 10,
/// // 4 ranks × 32 at 5, 3 ranks × 32 at 6 (576 examples; 64 are seen again).
/// assert_eq!(taper_dist::resume_batch(10, 64, 64), 10);
/// assert_eq!(taper_dist::resume_batch(10, 64, 128), 5);
/// assert_eq!(taper_dist::resume_batch(10, 64, 96), 6);
/// ```
pub fn resume_batch(batches: u64, old_global: u64, new_global: u64) -> u64 {
    (batches * old_global) / new_global.max(1)
}
