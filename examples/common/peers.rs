//! What the benchmark examples share: the process's peak memory, the best epoch, and
//! running a peer framework's benchmark program (PyTorch's script, burn's binaries) for the
//! JSON lines it prints.

use std::path::Path;
use std::process::Command;

/// Peak resident memory of this process (VmHWM), in MiB, where /proc exists.
pub fn peak_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1024.0)
}

/// The largest rate: each framework is compared on its best epoch.
pub fn best(rates: impl Iterator<Item = f64>) -> f64 {
    rates.fold(0.0, f64::max)
}

/// The JSON lines a peer's program printed, or `None` when it did not run or failed.
pub fn json_lines(cmd: &mut Command) -> Option<Vec<serde_json::Value>> {
    let out = cmd.output().ok()?;
    if !out.status.success() {
        return None;
    }
    let lines: Vec<serde_json::Value> = out
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"{"))
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect();
    (!lines.is_empty()).then_some(lines)
}

/// PyTorch's side of a benchmark: `benches/SCRIPT DIR LIMIT EPOCHS`, when `python3` has
/// torch.
pub fn torch(
    script: &str,
    dir: &Path,
    limit: usize,
    epochs: u64,
) -> Option<Vec<serde_json::Value>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches")
        .join(script);
    json_lines(
        Command::new("python3")
            .arg(path)
            .arg(dir)
            .arg(limit.to_string())
            .arg(epochs.to_string()),
    )
}

/// burn's side of a benchmark on one CPU backend (`ndarray` or `flex`): the binary `name`
/// of `benches/burn_mlp` (a separate workspace), when it has been built.
pub fn burn(
    name: &str,
    backend: &str,
    dir: &Path,
    limit: usize,
    epochs: u64,
) -> Result<Vec<serde_json::Value>, String> {
    let root = env!("CARGO_MANIFEST_DIR");
    let bin = Path::new(root)
        .join("benches/burn_mlp/target/release")
        .join(name);
    if !bin.exists() {
        return Err(format!(
            "not built (cargo build --release --manifest-path {root}/benches/burn_mlp/Cargo.toml)"
        ));
    }
    json_lines(
        Command::new(bin)
            .env("BURN_DEVICE", backend)
            .arg(dir)
            .arg(limit.to_string())
            .arg(epochs.to_string()),
    )
    .ok_or_else(|| "its run failed".to_string())
}
