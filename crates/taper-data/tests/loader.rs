//! The three batching strategies, epoch coverage, seeded shuffling, drop_last, transforms,
//! and rank shards.

use std::collections::BTreeSet;

use taper_data::transforms::{Compose, Normalize, RandomErasing, RandomTranslate};
use taper_data::{Batching, DataLoader, Dataset, ShardTail, TensorDataset};
use taper_tensor::{DType, Device, Tensor};

fn data(n: usize) -> TensorDataset {
    let x = Tensor::arange(0u32, n as u32, &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .reshape((n, 1))
        .unwrap();
    let y = Tensor::arange(0u32, n as u32, &Device::Cpu).unwrap();
    TensorDataset::new(x, y).unwrap()
}

fn epoch_ids(loader: &DataLoader<TensorDataset>, e: u64) -> Vec<Vec<u32>> {
    loader
        .epoch(e)
        .map(|b| b.unwrap().targets.to_vec1::<u32>().unwrap())
        .collect()
}

#[test]
fn each_strategy_has_its_batch_sizes_and_covers_the_epoch_once() {
    let n = 103;
    for (batching, sizes) in [
        (Batching::FullBatch, vec![103]),
        (Batching::Stochastic, vec![1; 103]),
        (Batching::MiniBatch(25), vec![25, 25, 25, 25, 3]),
    ] {
        for shuffle in [false, true] {
            let loader = DataLoader::new(data(n), batching)
                .unwrap()
                .shuffle(shuffle)
                .seed(3);
            let batches = epoch_ids(&loader, 0);
            assert_eq!(
                batches.iter().map(Vec::len).collect::<Vec<_>>(),
                sizes,
                "{batching:?}"
            );
            assert_eq!(loader.batches_per_epoch(), sizes.len());
            let seen: Vec<u32> = batches.concat();
            assert_eq!(seen.len(), n);
            assert_eq!(
                seen.iter().copied().collect::<BTreeSet<_>>().len(),
                n,
                "{batching:?}: every example exactly once"
            );
            // Inputs travel with their targets.
            let b = loader.epoch(0).next().unwrap().unwrap();
            assert_eq!(
                b.inputs.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                b.targets
                    .to_vec1::<u32>()
                    .unwrap()
                    .iter()
                    .map(|&v| v as f32)
                    .collect::<Vec<_>>()
            );
        }
    }
    let dropped = DataLoader::new(data(n), Batching::MiniBatch(25))
        .unwrap()
        .drop_last(true);
    assert_eq!(
        epoch_ids(&dropped, 0)
            .iter()
            .map(Vec::len)
            .collect::<Vec<_>>(),
        [25; 4]
    );
    assert!(DataLoader::new(data(3), Batching::MiniBatch(0)).is_err());
}

#[test]
fn shuffling_is_reproducible_per_seed_and_epoch_and_differs_across_epochs() {
    let loader = DataLoader::new(data(500), Batching::MiniBatch(50))
        .unwrap()
        .shuffle(true)
        .seed(11);
    let again = DataLoader::new(data(500), Batching::MiniBatch(50))
        .unwrap()
        .shuffle(true)
        .seed(11);
    let other_seed = DataLoader::new(data(500), Batching::MiniBatch(50))
        .unwrap()
        .shuffle(true)
        .seed(12);
    // Consuming the global generator in between changes nothing.
    taper_tensor::manual_seed(99);
    let _ = taper_tensor::randperm(1000);
    assert_eq!(epoch_ids(&loader, 4), epoch_ids(&again, 4));
    assert_ne!(epoch_ids(&loader, 0), epoch_ids(&loader, 1));
    assert_ne!(epoch_ids(&loader, 0), epoch_ids(&other_seed, 0));
    assert_ne!(loader.order(0), (0..500).collect::<Vec<_>>(), "shuffled");
    let ordered = DataLoader::new(data(500), Batching::MiniBatch(50)).unwrap();
    assert_eq!(ordered.order(7), (0..500).collect::<Vec<_>>());
}

#[test]
fn transforms_are_seeded_per_batch() {
    let imgs = Tensor::ones((40, 1, 8, 8), DType::F32, &Device::Cpu).unwrap();
    let ds =
        TensorDataset::new(imgs, Tensor::zeros(40, DType::U32, &Device::Cpu).unwrap()).unwrap();
    let make = |seed| {
        let t = Compose(vec![
            Box::new(RandomTranslate { max_shift: 2 }),
            Box::new(RandomErasing {
                p: 1.0,
                ..Default::default()
            }),
            Box::new(Normalize::new(0.5, 0.5).unwrap()),
        ]);
        DataLoader::new(ds.clone(), Batching::MiniBatch(10))
            .unwrap()
            .seed(seed)
            .transform(t)
    };
    let grab = |l: &DataLoader<TensorDataset>, e| -> Vec<f32> {
        l.epoch(e)
            .next()
            .unwrap()
            .unwrap()
            .inputs
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let (a, b, c) = (make(1), make(1), make(2));
    assert_eq!(grab(&a, 0), grab(&b, 0));
    assert_ne!(grab(&a, 0), grab(&a, 1));
    assert_ne!(grab(&a, 0), grab(&c, 0));
    assert_eq!(ds.len(), 40);
}

fn sharded(
    n: usize,
    b: usize,
    rank: usize,
    world: usize,
    tail: ShardTail,
) -> DataLoader<TensorDataset> {
    DataLoader::new(data(n), Batching::MiniBatch(b))
        .unwrap()
        .shuffle(true)
        .seed(11)
        .shard(rank, world, tail)
        .unwrap()
}

#[test]
fn shards_are_disjoint_cover_the_epoch_and_their_kth_batches_make_the_unsharded_kth_batch() {
    // 128 examples, 2 ranks at batch 32 against one loader at batch 64.
    let whole = DataLoader::new(data(128), Batching::MiniBatch(64))
        .unwrap()
        .shuffle(true)
        .seed(11);
    for epoch in [0, 3] {
        let ranks: Vec<Vec<Vec<u32>>> = (0..2)
            .map(|r| epoch_ids(&sharded(128, 32, r, 2, ShardTail::Pad), epoch))
            .collect();
        let global = epoch_ids(&whole, epoch);
        assert_eq!(ranks[0].len(), 2);
        assert_eq!(ranks[1].len(), 2);
        for (k, batch) in global.iter().enumerate() {
            let mut union: Vec<u32> = ranks[0][k].iter().chain(&ranks[1][k]).copied().collect();
            union.sort();
            let mut want = batch.clone();
            want.sort();
            assert_eq!(union, want, "epoch {epoch}, batch {k}");
        }
        let r0: BTreeSet<u32> = ranks[0].concat().into_iter().collect();
        let r1: BTreeSet<u32> = ranks[1].concat().into_iter().collect();
        assert!(r0.is_disjoint(&r1));
        assert_eq!(r0.len() + r1.len(), 128);
    }
}

#[test]
fn uneven_shards_are_padded_or_dropped_so_every_rank_takes_the_same_steps() {
    // 10 examples over 4 ranks: padded to 12 (3 each, two repeats) or dropped to 8 (2 each).
    for (tail, per_rank, seen) in [(ShardTail::Pad, 3, 12), (ShardTail::Drop, 2, 8)] {
        let shards: Vec<Vec<u32>> = (0..4)
            .map(|r| {
                let l = sharded(10, 2, r, 4, tail);
                assert_eq!(l.examples_per_epoch(), per_rank);
                epoch_ids(&l, 1).concat()
            })
            .collect();
        assert!(
            shards.iter().all(|s| s.len() == per_rank),
            "{tail:?}: {shards:?}"
        );
        let distinct: BTreeSet<u32> = shards.concat().into_iter().collect();
        assert_eq!(shards.concat().len(), seen);
        assert_eq!(distinct.len(), seen.min(10), "{tail:?}");
    }
    // The order is the unsharded loader's: rank r holds positions r, r+4, ... of it.
    let whole = DataLoader::new(data(10), Batching::MiniBatch(10))
        .unwrap()
        .shuffle(true)
        .seed(11);
    let order = whole.order(1);
    let rank2 = sharded(10, 2, 2, 4, ShardTail::Pad).order(1);
    assert_eq!(rank2, [order[2], order[6], order[0]]);
}

#[test]
fn bad_shards_are_errors() {
    let l = DataLoader::new(data(4), Batching::MiniBatch(2)).unwrap();
    let e = l.shard(2, 2, ShardTail::Pad).err().unwrap().to_string();
    assert!(e.contains("rank") && e.contains("2"), "{e}");
    let l = DataLoader::new(data(4), Batching::MiniBatch(2)).unwrap();
    let e = l.shard(0, 0, ShardTail::Pad).err().unwrap().to_string();
    assert!(e.contains("world_size"), "{e}");
}
