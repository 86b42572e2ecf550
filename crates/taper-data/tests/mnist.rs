//! The shipped MNIST subset, an installed Fashion-MNIST, and the lookup order.

use taper_data::mnist::{self, DataSource, MnistKind};
use taper_data::Dataset;
use taper_tensor::DType;

#[test]
fn the_built_in_subset_has_8000_train_and_2000_test_digits() {
    let m = mnist::builtin().unwrap();
    assert_eq!(m.source, DataSource::BuiltIn);
    assert_eq!((m.train.len(), m.test.len()), (8000, 2000));
    assert_eq!(m.train.inputs().dims(), &[8000, 1, 28, 28]);
    assert_eq!(m.train.inputs().dtype(), DType::F32);
    let (lo, hi) = (
        m.train
            .inputs()
            .min_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        m.train
            .inputs()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
    );
    assert_eq!((lo, hi), (0.0, 1.0));
    // Test-split class counts, as the subset's README states.
    let labels = m.test.targets().to_vec1::<u32>().unwrap();
    let mut counts = [0usize; 10];
    for l in labels {
        counts[l as usize] += 1;
    }
    assert_eq!(counts, [211, 211, 191, 215, 201, 178, 220, 191, 187, 195]);
    let train_max = m
        .train
        .targets()
        .max_all()
        .unwrap()
        .to_scalar::<u32>()
        .unwrap();
    assert_eq!(train_max, 9);
}

#[test]
fn an_installed_fashion_mnist_loads_or_the_test_says_why_not() {
    let dir = std::path::Path::new("/usr/share/datasets/fashion-mnist");
    if !dir.join("train-images-idx3-ubyte.gz").exists() {
        println!("skipped: Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)");
        return;
    }
    let f = mnist::load(MnistKind::Fashion, Some(dir)).unwrap();
    assert_eq!((f.train.len(), f.test.len()), (60000, 10000));
    assert_eq!(f.source, DataSource::Dir(dir.to_path_buf()));
}

#[test]
fn an_explicit_directory_must_hold_the_files() {
    let missing = std::env::temp_dir().join("taper-no-such-dataset");
    let e = mnist::load(MnistKind::Fashion, Some(&missing))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("taper-no-such-dataset") && e.contains("not found"),
        "{e}"
    );
}
