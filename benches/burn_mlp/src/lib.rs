//! What burn's benchmark binaries share: reading MNIST-format IDX files and a fixed
//! pseudo-random sample order.

use std::io::Read;

/// The payload of a gzipped IDX file (after its header).
pub fn idx(path: &str) -> Vec<u8> {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).expect("open IDX file"))
        .read_to_end(&mut raw)
        .expect("gunzip IDX file");
    let nd = raw[3] as usize;
    raw[4 + 4 * nd..].to_vec()
}

/// A fixed pseudo-random order of `n` samples (the data order does not change the per-step
/// cost).
pub fn order(n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut s = 0x9E3779B97F4A7C15u64;
    for i in (1..n).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        order.swap(i, (s % (i as u64 + 1)) as usize);
    }
    order
}

/// The training images (scaled to [0, 1]) and labels of an MNIST-format directory, the
/// first `limit` of them when given.
pub fn train_set(dir: &str, limit: Option<usize>) -> (Vec<f32>, Vec<i64>) {
    let images = idx(&format!("{dir}/train-images-idx3-ubyte.gz"));
    let labels = idx(&format!("{dir}/train-labels-idx1-ubyte.gz"));
    let n = limit.unwrap_or(labels.len()).min(labels.len());
    let x = images[..n * 784].iter().map(|&p| p as f32 / 255.0).collect();
    let y = labels[..n].iter().map(|&l| l as i64).collect();
    (x, y)
}
