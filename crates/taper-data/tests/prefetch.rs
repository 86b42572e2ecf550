//! The prefetching loader yields exactly the loader's batches (order, augmentation, a
//! resume position), passes errors through in place, and stops cleanly when dropped early.

use taper_data::transforms::RandomTranslate;
use taper_data::*;
use taper_tensor::{DType, Device, Tensor};

/// A dataset whose example 5 cannot be read.
struct Flaky(TensorDataset);

impl Dataset for Flaky {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn get(&self, i: usize) -> Result<(Tensor, Tensor)> {
        self.0.get(i)
    }
    fn get_batch(&self, idx: &[usize]) -> Result<(Tensor, Tensor)> {
        if idx.contains(&5) {
            return Err(Error::InvalidValue {
                field: "index",
                value: "5".into(),
                expected: "a readable example",
            });
        }
        self.0.get_batch(idx)
    }
}

fn images(n: usize) -> TensorDataset {
    let x = Tensor::arange(0f32, (n * 16) as f32, &Device::Cpu)
        .unwrap()
        .reshape((n, 1, 4, 4))
        .unwrap();
    TensorDataset::new(x, Tensor::zeros(n, DType::U32, &Device::Cpu).unwrap()).unwrap()
}

fn flat(b: Result<Batch>) -> std::result::Result<Vec<f32>, String> {
    b.map(|b| b.inputs.flatten_all().unwrap().to_vec1().unwrap())
        .map_err(|e| e.to_string())
}

fn loader<D: Dataset>(d: D) -> DataLoader<D> {
    DataLoader::new(d, Batching::MiniBatch(3))
        .unwrap()
        .shuffle(true)
        .seed(11)
        .transform(RandomTranslate { max_shift: 1 })
}

#[test]
fn prefetched_batches_are_the_loaders_own() {
    let direct = loader(images(20));
    let ahead = Prefetcher::new(loader(images(20)), 3).unwrap();
    for epoch in 0..3 {
        let a: Vec<_> = direct.epoch(epoch).map(flat).collect();
        let b: Vec<_> = ahead.epoch(epoch).map(flat).collect();
        assert_eq!(a, b, "epoch {epoch}");
    }
    let a: Vec<_> = direct.epoch_from(2, 4).map(flat).collect();
    let b: Vec<_> = ahead.epoch_from(2, 4).map(flat).collect();
    assert_eq!(a, b);
    assert_eq!(ahead.epoch_from(0, 5).len(), 2);
}

#[test]
fn errors_arrive_in_place_and_an_early_drop_stops_the_thread() {
    let direct = loader(Flaky(images(20)));
    let ahead = Prefetcher::new(loader(Flaky(images(20))), 2).unwrap();
    let a: Vec<_> = direct.epoch(0).map(flat).collect();
    let b: Vec<_> = ahead.epoch(0).map(flat).collect();
    assert!(a.iter().any(|r| r.is_err()));
    assert_eq!(a, b);
    // Take one batch and drop the rest: the producer, blocked on a full queue, exits.
    let mut it = ahead.epoch(1);
    assert!(it.next().is_some());
    drop(it);
    assert!(Prefetcher::new(loader(images(4)), 0).is_err());
}
