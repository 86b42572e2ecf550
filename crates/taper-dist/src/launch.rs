//! `Launcher`: builds the `mpirun` command line that starts N ranks of a program, and says
//! so plainly when Open MPI is not installed.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Result};

/// Starts programs under `mpirun` (Open MPI).
///
/// ```
/// use taper_dist::Launcher;
/// // An empty search path finds nothing: an error naming the program, not a hang.
/// let err = Launcher::find_in("mpirun", "").unwrap_err();
/// assert!(err.to_string().contains("`mpirun` was not found"));
/// ```
#[derive(Debug, Clone)]
pub struct Launcher {
    program: PathBuf,
    env: Vec<(String, String)>,
}

impl Launcher {
    /// `mpirun` on the `PATH`, or [`Error::LauncherMissing`].
    pub fn mpirun() -> Result<Self> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        Self::find_in("mpirun", path)
    }

    /// `program` in the directories of `path` (a `PATH`-style list).
    pub fn find_in(program: &str, path: impl Into<OsString>) -> Result<Self> {
        let path = path.into();
        std::env::split_paths(&path)
            .map(|d| d.join(program))
            .find(|p| is_executable(p))
            .map(|program| Self {
                program,
                env: Vec::new(),
            })
            .ok_or_else(|| Error::LauncherMissing {
                program: program.into(),
                searched: if path.is_empty() {
                    "an empty PATH".into()
                } else {
                    path.to_string_lossy().into_owned()
                },
            })
    }

    /// The launcher's path.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Sets an environment variable for every rank (exported with `-x`, so ranks on other
    /// machines get it too).
    pub fn env(mut self, key: &str, value: impl AsRef<str>) -> Self {
        self.env.push((key.into(), value.as_ref().into()));
        self
    }

    /// `mpirun -np <ranks> <program> <args…>`, with `--oversubscribe` (more ranks than
    /// cores is allowed, as on a 2-core CI machine) and, when running as root (containers,
    /// CI), `--allow-run-as-root`.
    pub fn command(&self, ranks: usize, program: impl AsRef<Path>) -> Command {
        let mut c = Command::new(&self.program);
        c.arg("-np").arg(ranks.to_string()).arg("--oversubscribe");
        if is_root() {
            c.arg("--allow-run-as-root");
        }
        for (k, v) in &self.env {
            c.env(k, v).arg("-x").arg(k);
        }
        c.arg(program.as_ref());
        c
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn is_root() -> bool {
    // The effective user id, read without libc: /proc/self/status's `Uid:` line.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
