//! End-to-end: each example's core routine with tiny settings, the MNIST training path
//! reaching accuracy far above chance, resume through the example, and the PNGs it writes.

#[path = "../examples/mnist/core.rs"]
#[allow(dead_code)]
mod mnist_core;

#[path = "../examples/linear_regression/core.rs"]
#[allow(dead_code)]
mod regression_core;

#[path = "../examples/optimizers/core.rs"]
#[allow(dead_code)]
mod optimizers_core;

#[path = "../examples/checkpoint/core.rs"]
#[allow(dead_code)]
mod checkpoint_core;
mod common;

use std::path::Path;

use clap::Parser;
use common::TmpDir;

/// A test's output directory (the example creates it), removed when dropped.
fn out(name: &str) -> TmpDir {
    TmpDir::fresh("examples", name)
}

/// A PNG exists, has the expected size and is not blank: many distinct non-white pixels.
fn assert_non_trivial_png(path: &Path) {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    assert!(
        img.width() >= 400 && img.height() >= 300,
        "{}: {}x{}",
        path.display(),
        img.width(),
        img.height()
    );
    let non_white = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    let total = (img.width() * img.height()) as usize;
    assert!(
        non_white * 50 > total,
        "{}: only {non_white} of {total} pixels are not white",
        path.display()
    );
    let mut colors: Vec<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    colors.sort_unstable();
    colors.dedup();
    assert!(
        colors.len() >= 8,
        "{}: {} distinct colours",
        path.display(),
        colors.len()
    );
}

#[test]
fn mnist_training_reaches_accuracy_far_above_chance_and_writes_its_outputs() {
    let dir = out("mnist");
    let args = mnist_core::Args::parse_from([
        "mnist",
        "--limit-train",
        "3000",
        "--epochs",
        "3",
        "--hidden",
        "64",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let s = mnist_core::run(&args).unwrap();
    assert!(
        s.final_test_accuracy > 0.80,
        "test accuracy {} (chance is 0.10)",
        s.final_test_accuracy
    );
    for f in [
        "metrics.csv",
        "curves.png",
        "checkpoints/best/model.safetensors",
    ] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    assert_eq!(
        csv.lines().count(),
        4,
        "header and one row per epoch:\n{csv}"
    );
    assert_non_trivial_png(&dir.join("curves.png"));
    // Resume for one more epoch from the saved checkpoint.
    let more = mnist_core::Args::parse_from([
        "mnist",
        "--limit-train",
        "3000",
        "--epochs",
        "4",
        "--hidden",
        "64",
        "--resume",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let r = mnist_core::run(&more).unwrap();
    assert!(r.final_test_accuracy > 0.80);
    assert_eq!(
        std::fs::read_to_string(dir.join("metrics.csv"))
            .unwrap()
            .lines()
            .count(),
        5
    );
}

#[test]
fn mnist_options_cnn_other_optimizers_and_strategies_run() {
    for extra in [
        vec![
            "--model",
            "cnn",
            "--limit-train",
            "256",
            "--epochs",
            "1",
            "--batch-size",
            "64",
        ],
        vec![
            "--optimizer",
            "ema-momentum",
            "--schedule",
            "onecycle",
            "--limit-train",
            "256",
            "--epochs",
            "1",
            "--clip-norm",
            "1.0",
        ],
        vec![
            "--optimizer",
            "rmsprop",
            "--schedule",
            "plateau",
            "--batching",
            "full",
            "--limit-train",
            "128",
            "--epochs",
            "2",
        ],
        vec![
            "--optimizer",
            "lion",
            "--schedule",
            "inverse-sqrt",
            "--batching",
            "stochastic",
            "--limit-train",
            "32",
            "--epochs",
            "1",
        ],
    ] {
        let dir = out("mnist-opts");
        let mut argv = vec!["mnist", "--hidden", "32", "--out", dir.to_str().unwrap()];
        argv.extend(extra.iter().copied());
        let s = mnist_core::run(&mnist_core::Args::parse_from(&argv))
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        assert!(
            s.final_test_accuracy > 0.0 && s.final_test_accuracy <= 1.0,
            "{argv:?}"
        );
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn asking_for_cuda_without_the_feature_fails_at_once_with_a_clear_message() {
    let args = mnist_core::Args::parse_from([
        "mnist",
        "--device",
        "cuda",
        "--out",
        out("cuda").to_str().unwrap(),
    ]);
    let e = mnist_core::run(&args).unwrap_err().to_string();
    assert!(e.contains("--features cuda"), "{e}");
}

#[test]
fn linear_regression_compares_the_documents_methods() {
    let cfg = regression_core::Config {
        iterations: 300,
        ..Default::default()
    };
    let rows = regression_core::run(&cfg).unwrap();
    assert_eq!(rows.len(), 13);
    assert_eq!(rows[0].method, "batch GD");
    for r in &rows {
        assert!(r.final_mse.is_finite(), "{}", r.method);
    }
    // Adam with lr 0.05 gets close to y = 2x + 1 within 300 steps.
    let adam = rows
        .iter()
        .find(|r| r.method.starts_with("Adam m̂/(√v̂+ε)"))
        .unwrap();
    assert!(
        (adam.weight - 2.0).abs() < 0.2 && (adam.bias - 1.0).abs() < 0.2,
        "{adam:?}"
    );
    assert!(adam.iterations_to_threshold.is_some());
}

#[test]
fn optimizer_comparison_writes_its_plots_and_table() {
    let dir = out("optimizers");
    let cfg = optimizers_core::Config {
        steps_2d: 60,
        mnist_steps: 15,
        out: dir.to_path_buf(),
    };
    let rows = optimizers_core::run(&cfg).unwrap();
    assert_eq!(rows.len(), taper::optim::optimizer_entries().len());
    for f in ["rosenbrock.png", "beale.png", "mnist_loss.png"] {
        assert_non_trivial_png(&cfg.out.join(f));
    }
    // Every optimizer lowered the MNIST loss from its start (about ln 10 ≈ 2.3).
    for r in &rows {
        assert!(r.mnist.0 < 2.3, "{}: {}", r.name, r.mnist.0);
    }
}

#[test]
fn checkpoint_example_resumes_bit_identically() {
    let dir = out("checkpoint");
    let o = checkpoint_core::run(12, &dir).unwrap();
    assert!(o.identical);
    assert_eq!(o.straight_accuracy, o.resumed_accuracy);
}
