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

#[path = "../examples/predict/core.rs"]
#[allow(dead_code)]
mod predict_core;

#[path = "../examples/keras_style/core.rs"]
#[allow(dead_code)]
mod keras_core;

#[path = "../examples/checkpoint/core.rs"]
#[allow(dead_code)]
mod checkpoint_core;
mod common;

use std::path::Path;

use clap::Parser;
use common::{check_with_onnx_runtime, TmpDir};

/// A test's output directory (the example creates it), removed when dropped.
fn out(name: &str) -> TmpDir {
    TmpDir::fresh("examples", name)
}

/// Runs the built example `name` with `args` in `dir` (or here) and returns its standard
/// output, having checked that it succeeded; `None`, saying so, when the example is not
/// built (`cargo test` builds the examples; `cargo test --test examples` alone does not).
fn run_example(name: &str, args: &[&str], dir: Option<&Path>) -> Option<String> {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples").join(name))
        .unwrap();
    if !bin.exists() {
        println!(
            "skipped: {} is not built (cargo test builds examples)",
            bin.display()
        );
        return None;
    }
    let mut cmd = std::process::Command::new(&bin);
    cmd.args(args);
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    let run = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    Some(stdout)
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
    assert_non_trivial_png(&dir.join("confusion.png"));
    // The whole-model file: `predict` rebuilds the network with no code and classifies.
    let (predicted, labels) = predict_core::run(&dir.join("model.safetensors"), 50).unwrap();
    let right = predicted
        .iter()
        .zip(&labels)
        .filter(|(p, l)| p == l)
        .count();
    assert!(right >= 35, "predict: {right} of 50 right");
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
fn mnist_export_onnx_writes_models_that_onnx_runtime_and_taper_run_as_trained() {
    use taper::prelude::{randn, DType, Device, ModuleT, Sequential};
    let ort = out("mnist-onnx-ort");
    std::fs::create_dir_all(&*ort).unwrap();
    for model in ["mlp", "cnn"] {
        let dir = out(&format!("mnist-onnx-{model}"));
        let onnx = ort.join(format!("mnist_{model}.onnx"));
        let argv = [
            "mnist",
            "--model",
            model,
            "--hidden",
            "32",
            "--limit-train",
            "256",
            "--epochs",
            "1",
            "--out",
            dir.to_str().unwrap(),
            "--export-onnx",
            onnx.to_str().unwrap(),
        ];
        mnist_core::run(&mnist_core::Args::parse_from(argv)).unwrap();
        let (trained, _) =
            Sequential::load_model(dir.join("model.safetensors"), &Device::Cpu, DType::F32)
                .unwrap();
        let (imported, _) = Sequential::import_onnx(&onnx, &Device::Cpu, DType::F32).unwrap();
        let mut io = std::collections::HashMap::new();
        for (k, batch) in [3usize, 8].into_iter().enumerate() {
            let x = randn((batch, 1, 28, 28), 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
            let y = trained.forward_t(&x, false).unwrap();
            let back = imported.forward_t(&x, false).unwrap();
            let diff = (&back - &y).unwrap().abs().unwrap().max_all().unwrap();
            assert!(
                diff.to_scalar::<f32>().unwrap() <= 1e-5,
                "{model}: import differs"
            );
            io.insert(format!("x{k}"), x);
            io.insert(format!("y{k}"), y);
        }
        let io_path = onnx.with_extension("safetensors");
        taper::tensor::candle::safetensors::save(&io, io_path).unwrap();
    }
    // ONNX Runtime gives the trained models' outputs (skipped, saying so, without it).
    check_with_onnx_runtime(&ort, 2);
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
        vec![
            "--optimizer",
            "rmsprop-centered",
            "--schedule",
            "cyclic",
            "--limit-train",
            "128",
            "--epochs",
            "2",
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
    // The registry, plus Lookahead, L-BFGS and Muon.
    assert_eq!(rows.len(), taper::optim::optimizer_entries().len() + 3);
    for f in [
        "rosenbrock.png",
        "beale.png",
        "convergence.png",
        "mnist_loss.png",
    ] {
        assert_non_trivial_png(&cfg.out.join(f));
    }
    // Every optimizer lowered the MNIST loss from its start (about ln 10 ≈ 2.3).
    for r in &rows {
        if let Some((loss, _)) = r.mnist {
            assert!(loss < 2.3, "{}: {loss}", r.name);
        }
        assert!(r.mnist.is_some() || r.name == "lbfgs-wolfe", "{}", r.name);
    }
    let lbfgs = rows.iter().find(|r| r.name == "lbfgs-wolfe").unwrap();
    let sgd = rows[0].rosenbrock.unwrap().0;
    assert!(
        lbfgs.rosenbrock.unwrap().0 < sgd,
        "L-BFGS ends below SGD on Rosenbrock"
    );
}

#[test]
fn checkpoint_example_resumes_bit_identically() {
    let dir = out("checkpoint");
    let o = checkpoint_core::run(12, &dir).unwrap();
    assert!(o.identical);
    assert_eq!(o.straight_accuracy, o.resumed_accuracy);
}

#[cfg(not(feature = "cuda"))]
#[test]
fn mnist_writes_tensorboard_logs_that_tensorboard_reads() {
    let dir = out("mnist-tb");
    let tb = dir.join("tb");
    let args = mnist_core::Args::parse_from([
        "mnist",
        "--limit-train",
        "256",
        "--batch-size",
        "64",
        "--epochs",
        "2",
        "--hidden",
        "16",
        "--optimizer",
        "momentum",
        "--schedule",
        "onecycle",
        "--histogram-every",
        "3",
        "--out",
        dir.to_str().unwrap(),
        "--tensorboard",
        tb.to_str().unwrap(),
    ]);
    mnist_core::run(&args).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crates/taper-train/tests/read_tensorboard.py"
    );
    let Ok(read) = std::process::Command::new("python3")
        .arg(script)
        .arg(&tb)
        .output()
    else {
        println!("skipped: python3 does not run");
        return;
    };
    if read.status.code() == Some(3) {
        println!("skipped: the tensorboard package is not installed (pip install tensorboard)");
        return;
    }
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&read.stdout).unwrap();
    let s = &got["scalars"];
    // 256 samples in batches of 64: 4 steps per epoch, 8 in all, numbered 1..=8.
    let steps: Vec<u64> = s["loss/train"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[0].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=8).collect::<Vec<_>>());
    for tag in ["lr/group0", "momentum/group0", "grad_norm", "time/step_ms"] {
        assert_eq!(s[tag].as_array().unwrap().len(), 8, "{tag}");
    }
    // OneCycle: the rate rises then falls, and momentum is cycled.
    let lr: Vec<f64> = s["lr/group0"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[1].as_f64().unwrap())
        .collect();
    let peak = lr.iter().cloned().fold(f64::MIN, f64::max);
    assert!(peak > lr[0] && peak > lr[7], "{lr:?}");
    for tag in ["loss/test", "accuracy/test", "accuracy/train"] {
        let e = s[tag].as_array().unwrap();
        assert_eq!(e.len(), 2, "{tag}");
        assert_eq!((e[0][0].as_u64(), e[1][0].as_u64()), (Some(1), Some(2)));
    }
    let acc = s["accuracy/test"][1][1].as_f64().unwrap();
    assert!(acc > 0.0 && acc <= 1.0);
    // Histograms at steps 3 and 6, for every parameter's weights and gradients.
    let h = &got["histograms"];
    let weight_tags: Vec<&String> = h
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("weights/"))
        .collect();
    assert!(!weight_tags.is_empty());
    for t in weight_tags {
        let g = t.replacen("weights/", "grads/", 1);
        for tag in [t.as_str(), g.as_str()] {
            let steps: Vec<u64> = h[tag]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["step"].as_u64().unwrap())
                .collect();
            assert_eq!(steps, [3, 6], "{tag}");
        }
    }
    assert_eq!(got["hparams"]["optimizer"], "momentum");
    assert_eq!(got["hparams"]["batch_size"].as_f64(), Some(64.0));
    assert_eq!(got["metrics"][0], "accuracy/test");
}

#[test]
fn keras_snippets_train_with_fit() {
    for snippet in [keras_core::Snippet::Sgd, keras_core::Snippet::Adam] {
        let h = keras_core::run(snippet, 10, true).unwrap();
        let loss = h.get("loss");
        assert_eq!(loss.len(), 10, "{snippet:?}");
        assert!(loss[9] < loss[0], "{snippet:?}: {loss:?}");
        assert!(h.stopped.is_none());
    }
}

/// The README's first script is `examples/mnist_fit.rs`, word for word (from its `use`).
#[test]
fn readme_shows_the_mnist_fit_example() {
    let root = env!("CARGO_MANIFEST_DIR");
    let example = std::fs::read_to_string(format!("{root}/examples/mnist_fit.rs")).unwrap();
    let body = &example[example.find("use taper::prelude::*;").unwrap()..];
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    assert!(
        readme.contains(body.trim_end()),
        "README and examples/mnist_fit.rs differ"
    );
}

/// `--prefetch` builds the same batches on a background thread: the same training result.
#[test]
fn mnist_prefetch_trains_the_same() {
    let run = |prefetch: &str| {
        let dir = out(&format!("mnist-prefetch-{prefetch}"));
        let args = mnist_core::Args::parse_from([
            "mnist",
            "--limit-train",
            "1000",
            "--epochs",
            "2",
            "--hidden",
            "32",
            "--prefetch",
            prefetch,
            "--out",
            dir.to_str().unwrap(),
        ]);
        mnist_core::run(&args).unwrap().final_test_accuracy
    };
    assert_eq!(run("0"), run("3"));
}

/// The README's script, run as the built example (in a scratch directory, where it writes
/// its weights): it trains and reports its test accuracy.
#[test]
fn mnist_fit_example_runs() {
    let dir = out("mnist_fit");
    std::fs::create_dir_all(&dir).unwrap();
    let Some(stdout) = run_example("mnist_fit", &[], Some(&dir)) else {
        return;
    };
    assert!(stdout.contains("Epoch 10/10"), "{stdout}");
    let acc: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("test accuracy "))
        .and_then(|v| v.trim_end_matches('%').parse().ok())
        .unwrap();
    assert!(acc > 90.0, "{acc}");
    assert!(dir.join("mnist_mlp.safetensors").exists());
}

/// The custom-layer guide's example, as built: a user-defined residual block inside a
/// `Sequential`, trained with `Fit`, checkpointed and resumed, saved as a model file and
/// loaded back to the same predictions.
#[test]
fn custom_layer_example_trains_resumes_and_round_trips_its_model_file() {
    let Some(stdout) = run_example("custom_layer", &[], None) else {
        return;
    };
    assert!(stdout.contains(" 3 (Residual) "), "{stdout}");
    assert!(stdout.contains("Epoch 3/3"), "{stdout}");
    assert!(
        stdout.contains("the model loaded from its file predicts the same: true"),
        "{stdout}"
    );
    let acc: f64 = stdout
        .lines()
        .find_map(|l| l.split("test accuracy ").nth(1))
        .and_then(|v| v.trim_end_matches('%').parse().ok())
        .unwrap();
    assert!(acc > 85.0, "{stdout}");
}

#[path = "../examples/char_gpt/core.rs"]
#[allow(dead_code)]
mod gpt_core;

/// The char_gpt recipe on a tiny model (2 layers, d 32, block 32): the loss falls, a
/// checkpoint at step 6 resumed into a freshly built run (other seed) reaches step 12 with
/// every weight bit-identical to an uninterrupted run, for AdamW and for Muon + AdamW; and
/// sampling is seeded and stays in the vocabulary.
#[test]
fn char_gpt_trains_resumes_bit_identically_and_samples() {
    use gpt_core::{
        bits_per_char, generate, windows, GptConfig, OptimizerKind, Recipe, Run, Sampling,
    };
    use taper::data::text::{shakespeare, Vocab};
    use taper::data::{Batching, DataLoader};
    let corpus = shakespeare();
    let vocab = Vocab::chars_of(&format!("{}{}", corpus.train, corpus.valid));
    let (train, valid) = windows(&vocab, &corpus.train[..50_000], corpus.valid, 32).unwrap();
    let train = DataLoader::new(train, Batching::MiniBatch(8))
        .unwrap()
        .shuffle(true)
        .seed(3);
    let valid = DataLoader::new(valid, Batching::MiniBatch(16)).unwrap();
    let config = GptConfig {
        vocab_size: vocab.len(),
        block_size: 32,
        n_layer: 2,
        n_head: 2,
        d_model: 32,
        dropout: 0.1,
    };
    let dir = out("char-gpt");
    for optimizer in [OptimizerKind::Adamw, OptimizerKind::Muon] {
        let recipe = Recipe {
            steps: 12,
            batch_size: 8,
            lr: 3e-3,
            warmup: 2,
            optimizer,
            clip: 1.0,
            seed: 5,
        };
        let mut straight = Run::new(config, &recipe, &train).unwrap();
        let before = bits_per_char(&straight.model, &valid, 4).unwrap();
        let mut losses = Vec::new();
        straight
            .train_until(&train, 12, |_, l| {
                losses.push(l);
                Ok(())
            })
            .unwrap();
        let after = bits_per_char(&straight.model, &valid, 4).unwrap();
        assert!(
            after < before - 0.3,
            "{optimizer:?}: validation {before:.3} -> {after:.3} bpc"
        );
        assert!(
            (before - (vocab.len() as f64).log2()).abs() < 0.5,
            "{before}"
        );

        let ckpt = dir.join(format!("{optimizer:?}"));
        let mut first = Run::new(config, &recipe, &train).unwrap();
        first.train_until(&train, 6, |_, _| Ok(())).unwrap();
        first.save(&ckpt).unwrap();
        drop(first);
        let other = Recipe {
            seed: 99,
            ..recipe.clone()
        };
        let mut second = Run::new(config, &other, &train).unwrap();
        second.resume(&ckpt).unwrap();
        assert_eq!(second.state.step, 6);
        second.train_until(&train, 12, |_, _| Ok(())).unwrap();
        assert!(
            straight.weight_bits().unwrap() == second.weight_bits().unwrap(),
            "{optimizer:?}: the resumed run differs from the uninterrupted one"
        );
    }
    // Seeded sampling: the same seed, the same text; ids stay in the vocabulary.
    let recipe = Recipe {
        steps: 1,
        batch_size: 8,
        lr: 1e-3,
        warmup: 1,
        optimizer: OptimizerKind::Adamw,
        clip: 1.0,
        seed: 1,
    };
    let run = Run::new(config, &recipe, &train).unwrap();
    let prompt = vocab.encode("ROMEO:").unwrap();
    let s = Sampling {
        temperature: 0.8,
        top_k: Some(5),
        seed: 7,
    };
    let a = generate(&run.model, &prompt, 40, s).unwrap();
    assert_eq!(a, generate(&run.model, &prompt, 40, s).unwrap());
    assert_eq!(a.len(), 40);
    assert!(vocab.decode(&a).is_ok());
    assert!(generate(
        &run.model,
        &prompt,
        1,
        Sampling {
            temperature: 0.0,
            ..s
        }
    )
    .is_err());
}

/// The LSTM example reads images row by row and learns in one epoch.
#[test]
fn lstm_mnist_example_learns_in_one_epoch() {
    let Some(stdout) = run_example("lstm_mnist", &["1"], None) else {
        return;
    };
    assert!(stdout.contains("lstm.weight_hh_l0"), "{stdout}");
    let acc: f64 = stdout
        .lines()
        .find_map(|l| l.split("test accuracy after 1 epochs: ").nth(1))
        .and_then(|v| v.trim_end_matches('%').parse().ok())
        .unwrap_or_else(|| panic!("no accuracy line in {stdout}"));
    assert!(acc > 70.0, "{acc}% after one epoch\n{stdout}");
}

#[test]
fn onnx_example_trains_exports_and_its_three_predictions_agree() {
    let dir = out("onnx-example");
    let Some(stdout) = run_example("onnx", &[dir.to_str().unwrap()], None) else {
        return;
    };
    let acc: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("test accuracy after one epoch: "))
        .and_then(|v| v.trim_end_matches('%').parse().ok())
        .unwrap_or_else(|| panic!("no accuracy line in {stdout}"));
    assert!(acc > 80.0, "{stdout}");
    assert!(dir.join("mnist_cnn.onnx").exists());
    // ONNX Runtime's line is there when Python has it; Taper's two always agree.
    assert!(
        stdout.contains("all three agree: true")
            || stdout.contains("all Taper predictions agree: true"),
        "{stdout}"
    );
    if common::onnx_runtime().is_ok() {
        assert!(stdout.contains("all three agree: true"), "{stdout}");
    }
}
