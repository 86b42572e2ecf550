//! `Subset`, range slicing and `random_split`: disjoint parts that cover the dataset, sized
//! as PyTorch sizes them, a function of the seed alone, and usable by a `DataLoader`.

use taper_data::*;
use taper_tensor::{DType, Device, Tensor};

fn numbered(n: usize) -> TensorDataset {
    let x = Tensor::arange(0u32, n as u32, &Device::Cpu).unwrap();
    let y = x.to_dtype(DType::F32).unwrap();
    TensorDataset::new(x, y).unwrap()
}

fn ids<D: Dataset>(d: &D) -> Vec<u32> {
    (0..d.len())
        .map(|i| d.get(i).unwrap().0.to_scalar::<u32>().unwrap())
        .collect()
}

#[test]
fn random_split_covers_the_dataset_disjointly_and_depends_only_on_the_seed() {
    let parts = random_split(numbered(10), [0.33, 0.33, 0.34], 7).unwrap();
    // ⌊3.3⌋, ⌊3.3⌋, ⌊3.4⌋ = 3, 3, 3 and the one left over to the first part, as PyTorch.
    let sizes: Vec<usize> = parts.iter().map(|p| p.len()).collect();
    assert_eq!(sizes, [4, 3, 3]);
    let mut all: Vec<u32> = parts.iter().flat_map(ids).collect();
    all.sort_unstable();
    assert_eq!(all, (0..10).collect::<Vec<u32>>());
    let again = random_split(numbered(10), [0.33, 0.33, 0.34], 7).unwrap();
    assert_eq!(ids(&again[0]), ids(&parts[0]));
    let other = random_split(numbered(10), [0.33, 0.33, 0.34], 8).unwrap();
    assert_ne!(ids(&other[0]), ids(&parts[0]));
    let counts = random_split(numbered(10), [6, 4], 7).unwrap();
    assert_eq!((counts[0].len(), counts[1].len()), (6, 4));
}

#[test]
fn bad_lengths_and_ranges_name_the_problem() {
    let e = random_split(numbered(10), [6, 5], 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("lengths") && e.contains("sum 11"), "{e}");
    let e = random_split(numbered(10), [0.5, 0.6], 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("add up to 1"), "{e}");
    let e = Subset::range(numbered(10), 8..11).unwrap_err().to_string();
    assert!(e.contains("8..11 of 10"), "{e}");
    assert!(Subset::new(numbered(3), vec![0, 3]).is_err());
}

#[test]
fn a_loader_batches_a_subset_by_its_own_indices() {
    let tail = Subset::range(numbered(10), 6..10).unwrap();
    assert_eq!(ids(&tail), [6, 7, 8, 9]);
    let loader = DataLoader::new(tail, Batching::MiniBatch(3)).unwrap();
    let batches: Vec<Vec<u32>> = loader
        .epoch(0)
        .map(|b| b.unwrap().inputs.to_vec1::<u32>().unwrap())
        .collect();
    assert_eq!(batches, [vec![6, 7, 8], vec![9]]);
    // A split's parts train and validate from one shared dataset.
    let parts = random_split(numbered(10), [8, 2], 1).unwrap();
    let val = DataLoader::new(parts[1].clone(), Batching::FullBatch).unwrap();
    let b = val.epoch(0).next().unwrap().unwrap();
    assert_eq!(b.inputs.to_vec1::<u32>().unwrap(), ids(&parts[1]));
}
