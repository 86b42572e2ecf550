//! TensorBoard event files read back by TensorBoard's own reader (`EventAccumulator`, from
//! `pip install tensorboard`): scalar names, steps and values, histograms and the
//! hyperparameters. Skips, saying so, where python3 or the package is absent.

use std::process::Command;

use taper_train::{HParam, SummaryWriter};

fn logdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("taper-tb-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// What `read_tensorboard.py` found, or `None` (after saying why) when it cannot run.
fn read_back(dir: &std::path::Path) -> Option<serde_json::Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/read_tensorboard.py");
    let out = match Command::new("python3").arg(script).arg(dir).output() {
        Ok(o) => o,
        Err(e) => {
            println!("skipped: python3 does not run ({e})");
            return None;
        }
    };
    if out.status.code() == Some(3) {
        println!(
            "skipped: {} (pip install tensorboard)",
            String::from_utf8_lossy(&out.stdout).trim()
        );
        return None;
    }
    assert!(
        out.status.success(),
        "the reader failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("the reader prints JSON"))
}

#[test]
fn tensorboards_reader_gets_back_scalars_histograms_and_hparams() {
    let dir = logdir("roundtrip");
    let weights: Vec<f64> = (0..1000).map(|i| ((i as f64) * 0.37).sin()).collect();
    {
        let mut tb = SummaryWriter::new(&dir).unwrap();
        for step in 1..=5u64 {
            tb.add_scalar("loss/train", 1.0 / step as f64, step)
                .unwrap();
            tb.add_scalar("lr/group0", 1e-3 * step as f64, step)
                .unwrap();
        }
        tb.add_histogram("weights/fc1", &weights, 5).unwrap();
        tb.add_histogram("weights/fc1", &[0.0, 2.0], 10).unwrap();
        tb.add_hparams(
            &[
                ("lr", HParam::Number(1e-3)),
                ("optimizer", "adam".into()),
                ("nesterov", false.into()),
            ],
            &["loss/train"],
        )
        .unwrap();
        tb.flush().unwrap();
    }
    let Some(got) = read_back(&dir) else {
        return;
    };
    let loss = got["scalars"]["loss/train"].as_array().unwrap();
    assert_eq!(loss.len(), 5);
    for (i, e) in loss.iter().enumerate() {
        assert_eq!(e[0].as_u64().unwrap(), i as u64 + 1);
        let want = (1.0 / (i as f64 + 1.0)) as f32 as f64;
        assert_eq!(e[1].as_f64().unwrap(), want);
    }
    assert_eq!(got["scalars"]["lr/group0"].as_array().unwrap().len(), 5);

    let h = got["histograms"]["weights/fc1"].as_array().unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[0]["step"], 5);
    assert_eq!(h[0]["num"].as_f64().unwrap(), 1000.0);
    assert_eq!(h[0]["bucket_total"].as_f64().unwrap(), 1000.0);
    let (min, max) = weights
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    assert_eq!(h[0]["min"].as_f64().unwrap(), min);
    assert_eq!(h[0]["max"].as_f64().unwrap(), max);
    assert!((h[0]["sum"].as_f64().unwrap() - weights.iter().sum::<f64>()).abs() < 1e-9);
    assert_eq!(h[1]["num"].as_f64().unwrap(), 2.0);

    assert_eq!(got["hparams"]["lr"].as_f64().unwrap(), 1e-3);
    assert_eq!(got["hparams"]["optimizer"], "adam");
    assert_eq!(got["hparams"]["nesterov"], false);
    assert_eq!(got["metrics"][0], "loss/train");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_writers_in_one_directory_do_not_collide_and_errors_name_the_path() {
    let dir = logdir("two");
    let a = SummaryWriter::new(&dir).unwrap();
    let b = SummaryWriter::new(&dir).unwrap();
    assert_ne!(a.path(), b.path());
    drop((a, b));
    let blocked = dir.join("a-file");
    std::fs::write(&blocked, b"x").unwrap();
    let err = SummaryWriter::new(blocked.join("sub"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("a-file"), "{err}");
    let mut tb = SummaryWriter::new(&dir).unwrap();
    let err = tb.add_histogram("w", &[f64::INFINITY], 0).unwrap_err();
    assert!(err.to_string().contains("inf in `w`"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_write_cut_short_by_a_kill_keeps_every_earlier_event() {
    let dir = logdir("cut");
    let path = {
        let mut tb = SummaryWriter::new(&dir).unwrap();
        for step in 1..=5u64 {
            tb.add_scalar("loss", step as f64, step).unwrap();
        }
        tb.flush().unwrap();
        tb.path().to_path_buf()
    };
    // A kill in the middle of the last record: its tail never reached the disk.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 7]).unwrap();
    let Some(got) = read_back(&dir) else {
        return;
    };
    let steps: Vec<u64> = got["scalars"]["loss"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[0].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2, 3, 4]);
    let _ = std::fs::remove_dir_all(&dir);
}
