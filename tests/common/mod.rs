//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};

use taper::prelude::ParamStore;

/// Every f32 entry of a store as raw bits, by name: equal exactly when bit-identical.
#[allow(dead_code)] // not every test file compares weights
pub fn weight_bits(store: &ParamStore) -> Vec<(String, Vec<u32>)> {
    store
        .state_dict()
        .into_iter()
        .map(|(n, t)| {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (n, v.iter().map(|x| x.to_bits()).collect())
        })
        .collect()
}

/// A path for a test's temporary directory, `taper-{kind}-{pid}-{name}` under the system's
/// temp dir: emptied when made (not created), removed with everything in it when dropped.
#[allow(dead_code)] // not every test file makes directories
pub struct TmpDir(PathBuf);

#[allow(dead_code)]
impl TmpDir {
    /// The path, with any leftover from an earlier run removed.
    pub fn fresh(kind: &str, name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("taper-{kind}-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        TmpDir(d)
    }
}

impl std::ops::Deref for TmpDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TmpDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[allow(dead_code)] // only the ONNX tests run ONNX Runtime
/// Whether python3 has what `check_ort.py` needs; else the reason to skip.
pub fn onnx_runtime() -> Result<(), String> {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import onnx, onnxruntime, safetensors, numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(
            "python3 with onnx, onnxruntime, safetensors and numpy is not available \
             (pip install onnx onnxruntime safetensors numpy)"
                .into(),
        )
    }
}

#[allow(dead_code)]
/// Runs `check_ort.py` over `dir`, asserting that every model passes.
pub fn check_with_onnx_runtime(dir: &Path, expected: usize) {
    if let Err(reason) = onnx_runtime() {
        println!("skipped: {reason}");
        return;
    }
    let out = std::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/onnx/check_ort.py"))
        .arg(dir)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "ONNX Runtime disagrees:\n{report}");
    assert_eq!(
        report.lines().filter(|l| l.starts_with("ok ")).count(),
        expected
    );
}

#[allow(dead_code)] // only the fuzz tests run a capped child
/// Runs this test binary's test `test` again in a child process, with the environment
/// variable `env` set to `value` (the child's cue to fuzz) and a 2 GiB address-space limit,
/// so a file that makes a reader allocate by what it claims fails the test instead of the
/// machine. Prints the child's lines that mention "mutations", and asserts that it
/// succeeded and printed `FUZZ-OK`.
pub fn run_capped_fuzz_child(test: &str, env: &str, value: &std::ffi::OsStr) {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([test, "--exact", "--nocapture"])
        .env(env, value)
        .env("MALLOC_ARENA_MAX", "2");
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let cap = 2u64 << 30;
                let lim = libc::rlimit {
                    rlim_cur: cap,
                    rlim_max: cap,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines().filter(|l| l.contains("mutations")) {
        println!("{line}");
    }
    assert!(
        out.status.success() && stdout.contains("FUZZ-OK"),
        "the fuzzing process failed ({:?}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
