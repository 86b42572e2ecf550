//! `CheckpointManager`: keeps the last K checkpoints and the best one by a metric.
//!
//! Checkpoints are directories `step-0000000123` under a root, plus `best`. Every change
//! to the root survives a kill at any instruction:
//!
//! - a checkpoint appears under its name only once complete ([`Checkpoint::save`]);
//! - `best` is replaced by one atomic exchange, so it is never absent once it exists, and
//!   its metric (kept in its metadata) is never lost;
//! - an old checkpoint is renamed to a hidden name before it is deleted, so a
//!   half-deleted directory is never listed.
//!
//! Hidden leftovers of killed processes (`.{name}.tmp-{pid}`, `.old-`, `.del-`) are removed
//! when a manager opens the root; a `best` moved aside by an interrupted swap on a file
//! system without atomic exchange is moved back.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::checkpoint::Checkpoint;
use crate::stopping::Direction;
use crate::{Error, Result};

/// Keeps the newest `keep_last` checkpoints and, when tracking a metric, the best one.
#[derive(Debug, Clone)]
pub struct CheckpointManager {
    root: PathBuf,
    keep_last: usize,
    best: Option<(Direction, Option<f64>)>,
}

impl CheckpointManager {
    /// Manages checkpoints under `root` (created), keeping the last `keep_last` (≥ 1), and
    /// removes the leftovers of killed processes from it.
    pub fn new(root: impl AsRef<Path>, keep_last: usize) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        if keep_last == 0 {
            return Err(Error::InvalidValue {
                field: "keep_last",
                value: "0".into(),
                expected: "at least 1",
            });
        }
        std::fs::create_dir_all(&root).map_err(|e| Error::Checkpoint {
            path: root.display().to_string(),
            reason: e.to_string(),
        })?;
        taper_tensor::clean_stale(&root)?;
        Ok(Self {
            root,
            keep_last,
            best: None,
        })
    }

    /// Also keep the best checkpoint by a metric passed to [`CheckpointManager::save`]; an
    /// existing `best` checkpoint's metric is read back, so a resumed run keeps comparing.
    ///
    /// An existing `best` that cannot be read (damaged, or without a finite `best_metric`)
    /// is an error rather than forgotten: the next save would otherwise replace a better
    /// checkpoint.
    pub fn track_best(mut self, direction: Direction) -> Result<Self> {
        let path = self.root.join("best");
        let previous = if path.exists() {
            let c = Checkpoint::load(&path)?;
            let m = c
                .train
                .metadata
                .get("best_metric")
                .and_then(|m| m.as_f64())
                .filter(|m| m.is_finite())
                .ok_or_else(|| Error::Checkpoint {
                    path: path.display().to_string(),
                    reason: "no finite `best_metric` in its metadata".into(),
                })?;
            Some(m)
        } else {
            None
        };
        self.best = Some((direction, previous));
        Ok(self)
    }

    /// Saves `ckpt` as `step-<step>`, updates `best` if `metric` improves, prunes old ones.
    pub fn save(&mut self, ckpt: &Checkpoint, metric: Option<f64>) -> Result<PathBuf> {
        let path = self.root.join(format!("step-{:010}", ckpt.train.step));
        ckpt.save(&path)?;
        if let (Some((dir, best)), Some(m)) = (&mut self.best, metric) {
            let better = match (*best, *dir) {
                (None, _) => m.is_finite(),
                (Some(b), Direction::Minimize) => m < b,
                (Some(b), Direction::Maximize) => m > b,
            };
            if better {
                let mut c = ckpt.clone();
                let mut meta = c.train.metadata.as_object().cloned().unwrap_or_default();
                meta.insert("best_metric".into(), json!(m));
                c.train.metadata = meta.into();
                c.save(self.root.join("best"))?;
                *best = Some(m);
            }
        }
        let all = self.checkpoints()?;
        for old in all.iter().take(all.len().saturating_sub(self.keep_last)) {
            taper_tensor::remove_dir_durably(old).map_err(|e| Error::Checkpoint {
                path: old.display().to_string(),
                reason: format!("removing an old checkpoint: {e}"),
            })?;
        }
        Ok(path)
    }

    /// The `step-*` checkpoints (names `step-` and at least 10 digits), oldest first.
    pub fn checkpoints(&self) -> Result<Vec<PathBuf>> {
        let rd = std::fs::read_dir(&self.root).map_err(|e| Error::Checkpoint {
            path: self.root.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut v: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_dir()
                    && p.file_name().is_some_and(|n| {
                        n.to_str()
                            .and_then(|n| n.strip_prefix("step-"))
                            .is_some_and(|d| d.len() >= 10 && d.bytes().all(|b| b.is_ascii_digit()))
                    })
            })
            .collect();
        v.sort();
        Ok(v)
    }

    /// The newest checkpoint, if any.
    pub fn latest(&self) -> Result<Option<PathBuf>> {
        Ok(self.checkpoints()?.pop())
    }

    /// The best checkpoint, if one was saved.
    pub fn best(&self) -> Option<PathBuf> {
        let p = self.root.join("best");
        p.is_dir().then_some(p)
    }
}
