//! Saving and loading a `ParamStore` as safetensors, with PyTorch's state_dict names and
//! layouts, so files move both ways between Taper and `torch.nn.Module.load_state_dict`.
//!
//! Writes are atomic ([`write_atomic`]): a temporary file in the same directory, synced,
//! then renamed over the target, so a crash never leaves a half-written file in its place.
//! Loading checks every tensor: missing, unexpected and shape-mismatched names are reported
//! ([`LoadReport`]), as an error in [`LoadMode::Strict`] or returned in [`LoadMode::Lenient`].

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use candle_core::safetensors::Load;

use crate::{Device, Error, ParamStore, Result, Tensor};

/// Writes `bytes` to `path` atomically: a sibling temporary file, fsync, rename.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    let err = |what: &str, e: std::io::Error| Error::File {
        path: path.display().to_string(),
        reason: format!("{what}: {e}"),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(|e| err("creating the temporary file", e))?;
    f.write_all(bytes).map_err(|e| err("writing", e))?;
    f.sync_all().map_err(|e| err("syncing", e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err("renaming into place", e)
    })
}

/// How strictly [`ParamStore::load`] matches names and shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadMode {
    /// Any missing, unexpected or mismatched tensor is an error; nothing is changed.
    #[default]
    Strict,
    /// Load what fits and return the report of the rest.
    Lenient,
}

/// What did not fit when loading weights.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Entries of the model absent from the file.
    pub missing: Vec<String>,
    /// Tensors of the file the model does not have.
    pub unexpected: Vec<String>,
    /// (name, the model's shape, the file's shape).
    pub mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl LoadReport {
    /// True when everything fit.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!("missing: {}", self.missing.join(", ")));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!("unexpected: {}", self.unexpected.join(", ")));
        }
        for (n, want, got) in &self.mismatched {
            parts.push(format!(
                "`{n}` has shape {got:?} in the file, {want:?} in the model"
            ));
        }
        if parts.is_empty() {
            parts.push("everything fits".into());
        }
        write!(f, "{}", parts.join("; "))
    }
}

/// Reads every tensor of a safetensors file onto the CPU, with errors naming the file.
pub fn read_safetensors(
    path: impl AsRef<Path>,
) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let path = path.as_ref();
    let err = |reason: String| Error::File {
        path: path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| err(format!("not a valid safetensors file: {e}")))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| err(format!("not a valid safetensors file: {e}")))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let t = view
            .load(&Device::Cpu)
            .map_err(|e| err(format!("tensor `{name}`: {e}")))?;
        out.insert(name, t);
    }
    Ok((out, header.metadata().clone().unwrap_or_default()))
}

/// Writes named tensors (moved to the CPU, made contiguous) and string metadata to a
/// safetensors file, atomically.
pub fn save_safetensors<'a>(
    path: impl AsRef<Path>,
    tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
    metadata: HashMap<String, String>,
) -> Result<()> {
    let path = path.as_ref();
    let cpu: Vec<(&str, Tensor)> = tensors
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<_>>()?;
    let bytes =
        safetensors::serialize(cpu.iter().map(|(n, t)| (*n, t)), Some(metadata)).map_err(|e| {
            Error::File {
                path: path.display().to_string(),
                reason: e.to_string(),
            }
        })?;
    write_atomic(path, &bytes)
}

impl ParamStore {
    /// Saves parameters and buffers (this view's) to a safetensors file, atomically, under
    /// their dotted names: `safetensors.torch.load_file` gives a state_dict PyTorch loads.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let sd = self.state_dict();
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        save_safetensors(path, sd.iter().map(|(n, t)| (n.as_str(), t)), meta)
    }

    /// Loads a safetensors file (e.g. one saved from PyTorch) into this view's entries,
    /// converting each tensor to the entry's device and dtype.
    pub fn load(&self, path: impl AsRef<Path>, mode: LoadMode) -> Result<LoadReport> {
        let (tensors, _) = read_safetensors(path)?;
        self.load_state_dict(&tensors, mode)
    }

    /// Loads named tensors into this view's entries (see [`ParamStore::load`]).
    pub fn load_state_dict(
        &self,
        tensors: &HashMap<String, Tensor>,
        mode: LoadMode,
    ) -> Result<LoadReport> {
        let entries = self.entries();
        let mut report = LoadReport::default();
        let mut fits = Vec::new();
        for e in &entries {
            match tensors.get(&e.name) {
                None => report.missing.push(e.name.clone()),
                Some(t) if t.dims() != e.var.dims() => report.mismatched.push((
                    e.name.clone(),
                    e.var.dims().to_vec(),
                    t.dims().to_vec(),
                )),
                Some(t) => fits.push((e, t)),
            }
        }
        let known: std::collections::HashSet<&str> =
            entries.iter().map(|e| e.name.as_str()).collect();
        report.unexpected = tensors
            .keys()
            .filter(|k| !known.contains(k.as_str()))
            .cloned()
            .collect();
        report.unexpected.sort();
        if mode == LoadMode::Strict && !report.is_clean() {
            return Err(Error::LoadMismatch(report));
        }
        for (e, t) in fits {
            e.var
                .set(&t.to_device(e.var.device())?.to_dtype(e.var.dtype())?)?;
        }
        Ok(report)
    }
}
