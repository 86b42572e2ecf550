//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};

/// A path for a test's temporary directory, `taper-{kind}-{pid}-{name}` under the system's
/// temp dir: emptied when made (not created), removed with everything in it when dropped.
pub struct TmpDir(PathBuf);

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
