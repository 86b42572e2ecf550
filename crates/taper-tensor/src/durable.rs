//! Files and directories that survive a kill at any instruction.
//!
//! Every write goes to a hidden sibling first, named `.{name}.{kind}-{pid}`
//! ([`temp_sibling`]), is synced, and only then renamed into place, and the parent
//! directory is synced after the rename. So a reader sees either the old content or the new
//! one, whole, never a mix:
//!
//! - [`write_atomic`] replaces a file;
//! - [`publish_dir`] puts a finished directory in place, replacing an existing one with a
//!   single atomic exchange (Linux `renameat2(RENAME_EXCHANGE)`), or, where the file system
//!   cannot exchange, by moving the old one aside first (a kill in between leaves the old
//!   one under `.{name}.old-{pid}`, which [`clean_stale`] moves back);
//! - [`remove_dir_durably`] renames a directory to a hidden name before deleting it, so a
//!   kill mid-delete never leaves a half-deleted directory under its visible name.
//!
//! A failed write removes what it wrote (a full disk stays no fuller), and [`clean_stale`]
//! removes the hidden leftovers of processes that were killed; every write first removes
//! those of its own target ([`clean_stale_siblings`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The kinds of hidden siblings this module writes, in `.{name}.{kind}-{pid}`.
const KINDS: [&str; 3] = ["tmp", "old", "del"];

fn file_err(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::File {
        path: path.display().to_string(),
        reason: format!("{what}: {e}"),
    }
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The hidden sibling `.{name}.{kind}-{pid}` of `path`, for this process.
pub fn temp_sibling(path: &Path, kind: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent_of(path).join(format!(".{name}.{kind}-{}", std::process::id()))
}

/// Flushes a directory's entries (renames, creations) to disk.
pub fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)
            .and_then(|f| f.sync_all())
            .map_err(|e| file_err(dir, "syncing the directory", e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Writes `bytes` to `path` atomically: a hidden sibling, fsync, rename, fsync of the
/// directory. On failure (a full disk, say) the sibling is removed and `path` is untouched.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    clean_stale_siblings(path)?;
    let tmp = temp_sibling(path, "tmp");
    let written = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| ("creating the temporary file", e))?;
        f.write_all(bytes).map_err(|e| ("writing", e))?;
        f.sync_all().map_err(|e| ("syncing", e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| ("renaming into place", e))
    })();
    if let Err((what, e)) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(file_err(path, what, e));
    }
    sync_dir(&parent_of(path))
}

/// Atomically exchanges two paths (Linux); `Ok(false)` where the system or file system
/// cannot.
fn exchange(a: &Path, b: &Path) -> std::io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let ca = CString::new(a.as_os_str().as_bytes())?;
        let cb = CString::new(b.as_os_str().as_bytes())?;
        // SAFETY: both strings are valid and NUL-terminated for the duration of the call;
        // renameat2 reads them and nothing else.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                libc::AT_FDCWD,
                ca.as_ptr(),
                libc::AT_FDCWD,
                cb.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if rc == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => Ok(false),
            _ => Err(e),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (a, b);
        Ok(false)
    }
}

/// Puts the finished directory `staged` (a sibling of `target`, already synced) in place
/// of `target`.
///
/// If `target` exists it is replaced atomically: with one exchange where the file system
/// supports it, so `target` is never absent; otherwise it is moved to
/// `.{name}.old-{pid}` first and [`clean_stale`] restores it if a kill lands in between.
/// The replaced directory is deleted afterwards.
pub fn publish_dir(staged: &Path, target: &Path) -> Result<()> {
    let parent = parent_of(target);
    clean_stale_siblings(target)?;
    let exists = std::fs::symlink_metadata(target).is_ok();
    if !exists {
        std::fs::rename(staged, target).map_err(|e| file_err(target, "renaming into place", e))?;
        return sync_dir(&parent);
    }
    if exchange(staged, target).map_err(|e| file_err(target, "exchanging with the new one", e))? {
        sync_dir(&parent)?;
        // `staged` now holds the previous content.
        return remove_dir_durably(staged);
    }
    let old = temp_sibling(target, "old");
    let _ = std::fs::remove_dir_all(&old);
    std::fs::rename(target, &old).map_err(|e| file_err(target, "moving the old one aside", e))?;
    if let Err(e) = std::fs::rename(staged, target) {
        let _ = std::fs::rename(&old, target);
        return Err(file_err(target, "renaming into place", e));
    }
    sync_dir(&parent)?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Deletes a directory so that a kill part-way never leaves it half-deleted under its own
/// name: it is renamed to `.{name}.del-{pid}` (synced) and deleted from there.
pub fn remove_dir_durably(dir: &Path) -> Result<()> {
    let del = temp_sibling(dir, "del");
    std::fs::rename(dir, &del).map_err(|e| file_err(dir, "moving aside for deletion", e))?;
    sync_dir(&parent_of(dir))?;
    std::fs::remove_dir_all(&del).map_err(|e| file_err(&del, "deleting", e))
}

/// Splits a hidden sibling's file name `.{name}.{kind}-{pid}` into (name, kind, pid).
pub fn parse_temp_name(file_name: &str) -> Option<(&str, &str, u32)> {
    let rest = file_name.strip_prefix('.')?;
    let (head, pid) = rest.rsplit_once('-')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let pid: u32 = pid.parse().ok()?;
    let (name, kind) = head.rsplit_once('.')?;
    (!name.is_empty() && KINDS.contains(&kind)).then_some((name, kind, pid))
}

/// Whether process `pid` is running (conservatively true where this cannot be told).
pub fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    #[cfg(unix)]
    {
        let Ok(p) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: signal 0 only checks that the process exists; nothing is sent.
        let rc = unsafe { libc::kill(p, 0) };
        rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        true
    }
}

/// Removes the hidden leftovers (`.{name}.tmp-{pid}`, `.del-`, `.old-`) of processes that
/// are no longer running from `dir`, and returns what it removed or restored.
///
/// An `.{name}.old-{pid}` whose `name` is missing is the previous content of `name` from a
/// swap that was killed half-way (see [`publish_dir`]): it is renamed back rather than
/// deleted. Leftovers of running processes (including this one) are left alone.
pub fn clean_stale(dir: &Path) -> Result<Vec<PathBuf>> {
    clean_stale_where(dir, |_| true)
}

/// [`clean_stale`] for the leftovers of one target only: `.{name}.*-{pid}` next to `path`.
/// [`write_atomic`] and [`publish_dir`] call it first, so killed writers of the same file
/// or directory leave nothing behind for long.
pub fn clean_stale_siblings(path: &Path) -> Result<Vec<PathBuf>> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    clean_stale_where(&parent_of(path), |n| n == name)
}

fn clean_stale_where(dir: &Path, wanted: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(file_err(dir, "listing", e)),
    };
    let mut done = Vec::new();
    for entry in rd.filter_map(|e| e.ok()) {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some((name, kind, pid)) = parse_temp_name(&file_name) else {
            continue;
        };
        if !wanted(name) || process_alive(pid) {
            continue;
        }
        let path = entry.path();
        let original = dir.join(name);
        if kind == "old" && std::fs::symlink_metadata(&original).is_err() {
            std::fs::rename(&path, &original)
                .map_err(|e| file_err(&path, "restoring after an interrupted swap", e))?;
            done.push(original);
            continue;
        }
        let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| file_err(&path, "removing a stale temporary", e))?;
        done.push(path);
    }
    if !done.is_empty() {
        sync_dir(dir)?;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_round_trip() {
        assert_eq!(
            parse_temp_name(".step-0000000012.tmp-4242"),
            Some(("step-0000000012", "tmp", 4242))
        );
        assert_eq!(
            parse_temp_name(".model.safetensors.old-7"),
            Some(("model.safetensors", "old", 7))
        );
        for bad in [
            "step-1",
            ".x.tmp-",
            ".x.tmp-+1",
            ".x.new-1",
            "..tmp-1",
            ".x.tmp-99999999999",
        ] {
            assert_eq!(parse_temp_name(bad), None, "{bad}");
        }
    }

    fn dead_pid() -> u32 {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    }

    #[test]
    fn writes_remove_the_leftovers_of_killed_writers_of_the_same_target() {
        let dir = std::env::temp_dir().join(format!("taper-durable-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pid = dead_pid();
        let stale = dir.join(format!(".w.bin.tmp-{pid}"));
        let other = dir.join(format!(".x.bin.tmp-{pid}"));
        std::fs::write(&stale, b"half").unwrap();
        std::fs::write(&other, b"half").unwrap();
        write_atomic(dir.join("w.bin"), b"whole").unwrap();
        assert!(!stale.exists(), "the killed writer's temporary is gone");
        assert!(other.exists(), "another target's is left to clean_stale");
        assert_eq!(std::fs::read(dir.join("w.bin")).unwrap(), b"whole");
        // Replacing a directory: the new content appears whole, the old one is gone.
        let target = dir.join("d");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("a"), b"old").unwrap();
        let staged = temp_sibling(&target, "tmp");
        std::fs::create_dir(&staged).unwrap();
        std::fs::write(staged.join("a"), b"new").unwrap();
        publish_dir(&staged, &target).unwrap();
        assert_eq!(std::fs::read(target.join("a")).unwrap(), b"new");
        let removed = clean_stale(&dir).unwrap();
        assert_eq!(removed, [other]);
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
