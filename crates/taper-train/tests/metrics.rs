//! Metrics and the CSV log against hand-computed values.

use taper_tensor::{Device, Tensor};
use taper_train::{accuracy, ConfusionMatrix, CsvLog, Progress, RunningMean};

#[test]
fn accuracy_confusion_matrix_and_running_mean() {
    let logits = Tensor::new(
        &[[2f32, 1., 0.], [0., 3., 1.], [1., 0., 5.], [4., 0., 1.]],
        &Device::Cpu,
    )
    .unwrap();
    let y = Tensor::new(&[0u32, 1, 1, 2], &Device::Cpu).unwrap();
    assert_eq!(accuracy(&logits, &y).unwrap(), 0.5);
    let mut cm = ConfusionMatrix::new(3);
    cm.update(&logits, &y).unwrap();
    assert_eq!(
        (cm.get(0, 0), cm.get(1, 1), cm.get(1, 2), cm.get(2, 0)),
        (1, 1, 1, 1)
    );
    assert_eq!(cm.accuracy(), 0.5);
    assert_eq!(cm.recall(), [1.0, 0.5, 0.0]);
    assert!(cm.to_string().contains("true\\pred"));
    assert!(accuracy(&logits, &Tensor::new(&[0u32], &Device::Cpu).unwrap()).is_err());
    let mut m = RunningMean::default();
    m.add(1.0, 3);
    m.add(3.0, 1);
    assert_eq!((m.mean(), m.count()), (1.5, 4));
    let mut p = Progress::new(2, "test").visible(false);
    p.update(10, 0.5, 0.9);
    assert!(!p.is_visible() && p.samples() == 10);
}

#[test]
fn csv_rows_are_written_and_checked() {
    let path = std::env::temp_dir().join(format!("taper-csv-{}.csv", std::process::id()));
    let mut log = CsvLog::create(&path, &["epoch", "loss"]).unwrap();
    log.row(&[1.0, 0.25]).unwrap();
    assert!(log.row(&[1.0]).is_err());
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "epoch,loss\n1,0.25\n"
    );
    drop(log);
    std::fs::remove_file(&path).unwrap();
}
