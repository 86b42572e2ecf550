//! Saving and loading a `ParamStore` as safetensors, with PyTorch's state_dict names and
//! layouts, so files move both ways between Taper and `torch.nn.Module.load_state_dict`.
//!
//! Writes are atomic ([`write_atomic`](crate::write_atomic)): a temporary file in the same
//! directory, synced, then renamed over the target, so a crash never leaves a half-written
//! file in its place.
//! Loading checks every tensor: missing, unexpected and shape-mismatched names are reported
//! ([`LoadReport`]), as an error in [`LoadMode::Strict`] or returned in [`LoadMode::Lenient`].

use std::collections::HashMap;
use std::path::Path;

use candle_core::safetensors::Load;

use crate::durable::write_atomic;
use crate::{DType, Device, Error, ParamStore, Result, Tensor};

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
    /// (name, the model's dtype, the file's dtype): an integer tensor for a float entry or
    /// the reverse (float to float converts and is not listed).
    pub wrong_dtype: Vec<(String, DType, DType)>,
}

impl LoadReport {
    /// True when everything fit.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.mismatched.is_empty()
            && self.wrong_dtype.is_empty()
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
        for (n, want, got) in &self.wrong_dtype {
            parts.push(format!(
                "`{n}` is {got:?} in the file, {want:?} in the model"
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
    let bytes = std::fs::read(path).map_err(|e| Error::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    parse_safetensors(&bytes, path)
}

/// Decodes safetensors bytes (tensors onto the CPU, and the header's metadata); `origin`
/// names the source in errors.
pub fn parse_safetensors(
    bytes: &[u8],
    origin: &Path,
) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let err = |reason: String| Error::File {
        path: origin.display().to_string(),
        reason,
    };
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| err(format!("not a valid safetensors file: {e}")))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
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

/// Encodes named tensors (moved to the CPU, made contiguous) and string metadata as
/// safetensors bytes; `origin` names the destination in errors.
pub fn serialize_safetensors<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
    metadata: HashMap<String, String>,
    origin: &Path,
) -> Result<Vec<u8>> {
    let cpu: Vec<(&str, Tensor)> = tensors
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<_>>()?;
    safetensors::serialize(cpu.iter().map(|(n, t)| (*n, t)), Some(metadata)).map_err(|e| {
        Error::File {
            path: origin.display().to_string(),
            reason: e.to_string(),
        }
    })
}

/// Writes named tensors (moved to the CPU, made contiguous) and string metadata to a
/// safetensors file, atomically.
pub fn save_safetensors<'a>(
    path: impl AsRef<Path>,
    tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
    metadata: HashMap<String, String>,
) -> Result<()> {
    let path = path.as_ref();
    write_atomic(path, &serialize_safetensors(tensors, metadata, path)?)
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

    /// Loads a safetensors file whose names differ from this model's (a PyTorch model with
    /// other submodule names): each file name goes through `rename` first ([`rename_keys`];
    /// [`prefix_map`] builds the usual one), then the tensors load as
    /// [`ParamStore::load_state_dict`] loads them, checked strictly under
    /// [`LoadMode::Strict`] after the renaming.
    ///
    /// ```
    /// use taper_tensor::{prefix_map, DType, Device, LoadMode, ParamStore, Tensor};
    /// let dir = std::env::temp_dir().join(format!("taper-renamed-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// // PyTorch saved `classifier.weight`; this model calls the layer `fc`.
    /// let theirs = ParamStore::new(&Device::Cpu, DType::F32);
    /// theirs.sub("classifier").parameter("weight", (2, 3), |s, dt, d| Ok(Tensor::ones(s, dt, d)?))?;
    /// theirs.save(dir.join("w.safetensors"))?;
    /// let ours = ParamStore::new(&Device::Cpu, DType::F32);
    /// ours.sub("fc").parameter("weight", (2, 3), |s, dt, d| Ok(Tensor::zeros(s, dt, d)?))?;
    /// ours.load_renamed(dir.join("w.safetensors"), prefix_map(&[("classifier", "fc")]), LoadMode::Strict)?;
    /// assert_eq!(ours.var("fc.weight")?.as_tensor().sum_all()?.to_scalar::<f32>()?, 6.0);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn load_renamed(
        &self,
        path: impl AsRef<Path>,
        rename: impl Fn(&str) -> Option<String>,
        mode: LoadMode,
    ) -> Result<LoadReport> {
        let (tensors, _) = read_safetensors(path)?;
        self.load_state_dict(&rename_keys(tensors, rename)?, mode)
    }

    /// Loads named tensors into this view's entries (see [`ParamStore::load`]).
    ///
    /// Floating-point tensors are converted to the entry's float dtype (an f64 file loads
    /// into an f32 model); an integer tensor for a float entry, or the reverse, is a dtype
    /// mismatch, since converting would load different numbers. Every tensor is checked and
    /// converted before the first entry changes, so a failure, in either mode, leaves the
    /// store as it was.
    pub fn load_state_dict(
        &self,
        tensors: &HashMap<String, Tensor>,
        mode: LoadMode,
    ) -> Result<LoadReport> {
        Ok(self.stage_state_dict(tensors, mode)?.commit())
    }

    /// Checks and converts `tensors` as [`ParamStore::load_state_dict`] would, changing
    /// nothing; [`StagedLoad::commit`] then writes them. A checkpoint uses this to check
    /// the weights and everything else before it changes anything.
    pub fn stage_state_dict(
        &self,
        tensors: &HashMap<String, Tensor>,
        mode: LoadMode,
    ) -> Result<StagedLoad> {
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
                Some(t) if t.dtype().is_float() != e.var.dtype().is_float() => report
                    .wrong_dtype
                    .push((e.name.clone(), e.var.dtype(), t.dtype())),
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
        // Convert everything first: a conversion that fails must not leave half a model.
        let sets = fits
            .into_iter()
            .map(|(e, t)| {
                let t = t
                    .to_device(e.var.device())
                    .and_then(|t| t.to_dtype(e.var.dtype()))
                    .map_err(|err| Error::File {
                        path: e.name.clone(),
                        reason: format!(
                            "converting the {:?} tensor to the model's {:?}: {err}",
                            t.dtype(),
                            e.var.dtype()
                        ),
                    })?;
                Ok((e.var.clone(), t))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(StagedLoad { sets, report })
    }
}

/// Weights checked and converted by [`ParamStore::stage_state_dict`], ready to be written
/// into the store by [`StagedLoad::commit`], which cannot fail.
#[derive(Debug)]
pub struct StagedLoad {
    sets: Vec<(candle_core::Var, Tensor)>,
    report: LoadReport,
}

impl StagedLoad {
    /// What did not fit (empty under [`LoadMode::Strict`]).
    pub fn report(&self) -> &LoadReport {
        &self.report
    }

    /// Writes the weights into the store's variables and returns the report.
    pub fn commit(self) -> LoadReport {
        for (var, t) in self.sets {
            // Shapes and dtypes were matched when staging, so `set` cannot fail.
            let _ = var.set(&t);
        }
        self.report
    }
}

/// Renames the keys of a state dict with `rename` (`None` drops a key, such as a buffer the
/// model does not have), for loading weights whose names differ from the model's. Two keys
/// renamed to one name are an error naming both.
pub fn rename_keys(
    tensors: HashMap<String, Tensor>,
    rename: impl Fn(&str) -> Option<String>,
) -> Result<HashMap<String, Tensor>> {
    let mut out: HashMap<String, Tensor> = HashMap::with_capacity(tensors.len());
    let mut from: HashMap<String, String> = HashMap::new();
    let mut keys: Vec<String> = tensors.keys().cloned().collect();
    keys.sort();
    let mut tensors = tensors;
    for key in keys {
        let Some(new) = rename(&key) else { continue };
        if let Some(first) = from.get(&new) {
            return Err(Error::InvalidName {
                name: new,
                reason: format!("both `{first}` and `{key}` are renamed to it"),
            });
        }
        let t = tensors.remove(&key).expect("listed above");
        from.insert(new.clone(), key);
        out.insert(new, t);
    }
    Ok(out)
}

/// A renaming for [`rename_keys`] and [`ParamStore::load_renamed`] from a table of dotted
/// prefixes, PyTorch's names on the left and the model's on the right: a key under the
/// longest matching prefix (at a dot boundary) gets the replacement; other keys keep
/// their names.
///
/// ```
/// let map = taper_tensor::prefix_map(&[("features.0", "conv1"), ("features", "body"), ("classifier", "fc")]);
/// assert_eq!(map("features.0.weight").as_deref(), Some("conv1.weight"));
/// assert_eq!(map("features.10.bias").as_deref(), Some("body.10.bias"));
/// assert_eq!(map("classifier.weight").as_deref(), Some("fc.weight"));
/// assert_eq!(map("head.weight").as_deref(), Some("head.weight"));
/// ```
pub fn prefix_map(table: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let mut table: Vec<(String, String)> = table
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    table.sort_by_key(|(a, _)| std::cmp::Reverse(a.len()));
    move |key: &str| {
        for (from, to) in &table {
            if let Some(rest) = key.strip_prefix(from.as_str()) {
                if rest.is_empty() || rest.starts_with('.') {
                    return Some(format!("{to}{rest}"));
                }
            }
        }
        Some(key.to_string())
    }
}
