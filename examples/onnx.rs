//! Train in Rust, ship as ONNX: trains a small CNN on the built-in MNIST digits for one
//! epoch, exports it (`Sequential::export_onnx`), reads the file back into Taper
//! (`Sequential::import_onnx`), and runs it in ONNX Runtime when Python has it, printing
//! the three sets of predictions side by side.
//!
//! ```text
//! cargo run --release --example onnx [-- OUT_DIR]
//! ```
//!
//! Without `pip install onnxruntime`, it prints the Python lines that run the file.

use std::path::{Path, PathBuf};
use std::process::Command;

use taper::prelude::*;
use taper::tensor::candle;

/// The Python that runs the exported file in ONNX Runtime on the saved digits.
const ORT_SCRIPT: &str = "\
import sys, onnxruntime as ort
from safetensors.numpy import load_file
x = load_file(sys.argv[2])['x']
sess = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])
print(' '.join(str(int(c)) for c in sess.run(['output'], {'input': x})[0].argmax(1)))";

fn model(store: &ParamStore) -> Result<Sequential> {
    Ok(Sequential::new(store)
        .append_with(|s| Conv2dConfig::new(1, 8, (3, 3)).padding(1).build(s))?
        .append_with(|s| BatchNormConfig::new_2d(8).build(s))?
        .append(Activation::Relu)
        .append(MaxPool2d::new(2))
        .append_with(|s| Conv2dConfig::new(8, 16, (3, 3)).padding(1).build(s))?
        .append(Activation::Relu)
        .append(MaxPool2d::new(2))
        .append(Flatten::default())
        .append_with(|s| Linear::new(16 * 7 * 7, 64, s))?
        .append(Activation::Gelu)
        .append(Dropout::new(0.1)?)
        .append_with(|s| Linear::new(64, 10, s))?)
}

/// The predicted classes of `x`.
fn predict(model: &Sequential, x: &Tensor) -> Result<Vec<u32>> {
    Ok(no_grad(|| model.forward_t(x, false))?
        .argmax(1)?
        .to_vec1::<u32>()?)
}

fn show(v: &[u32]) -> String {
    v.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// ONNX Runtime's predictions through Python, or why not.
fn onnx_runtime(onnx: &Path, digits: &Path) -> std::result::Result<Vec<u32>, String> {
    let out = Command::new("python3")
        .args(["-c", ORT_SCRIPT])
        .arg(onnx)
        .arg(digits)
        .output()
        .map_err(|e| format!("python3 could not run: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("python3 failed")
            .to_string());
    }
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|c| c.parse().map_err(|e| format!("unexpected output: {e}")))
        .collect()
}

fn main() -> anyhow::Result<()> {
    let dir: PathBuf = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| "runs/onnx".into());
    std::fs::create_dir_all(&dir)?;
    manual_seed(0);
    let data = mnist::builtin()?;
    let norm = Normalize::new(0.1307, 0.3081)?;
    let train = DataLoader::new(data.train, Batching::MiniBatch(64))?
        .shuffle(true)
        .transform(norm);
    let test = DataLoader::new(data.test, Batching::MiniBatch(16))?.transform(norm);
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let net = model(&store)?;
    let mut opt = Optimizer::new(Adam::new(2e-3), &store)?;
    let mut fit = Fit::new(&net, &store, &mut opt, cross_entropy)
        .epochs(1)
        .metrics([Metric::Accuracy])
        .validation(&test);
    fit.run(&train)?;
    println!(
        "test accuracy after one epoch: {:.2}%",
        100.0 * fit.evaluate(&test)?["accuracy"]
    );

    // Export: opset 17, input `input` (batch, 1, 28, 28) with a dynamic batch, output
    // `output` (batch, 10), BatchNorm in evaluation form, dropout as Identity.
    let onnx = dir.join("mnist_cnn.onnx");
    net.export_onnx(&onnx, &[1, 28, 28])?;
    println!(
        "wrote {} ({} bytes)",
        onnx.display(),
        std::fs::metadata(&onnx)?.len()
    );

    // Read back: a Sequential of Taper's layers with trainable weights.
    let (back, _) = Sequential::import_onnx(&onnx, &Device::Cpu, DType::F32)?;
    let x = test.epoch(0).next().expect("a test batch")?.inputs;
    let (ours, reread) = (predict(&net, &x)?, predict(&back, &x)?);
    println!("Taper (trained model):    {}", show(&ours));
    println!("Taper (read from ONNX):   {}", show(&reread));

    let digits = dir.join("digits.safetensors");
    candle::safetensors::save(&std::collections::HashMap::from([("x", x)]), &digits)?;
    match onnx_runtime(&onnx, &digits) {
        Ok(ort) => {
            println!("ONNX Runtime:             {}", show(&ort));
            println!("all three agree: {}", ours == reread && ours == ort);
        }
        Err(why) => {
            println!("all Taper predictions agree: {}", ours == reread);
            println!(
                "ONNX Runtime did not run ({why}). With `pip install onnxruntime safetensors`:\n\
                 python3 -c \"{ORT_SCRIPT}\" {} {}",
                onnx.display(),
                digits.display()
            );
        }
    }
    Ok(())
}
