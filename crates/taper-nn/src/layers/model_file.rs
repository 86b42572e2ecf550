//! Whole-model files for a `Sequential` of Taper's layers: `save_model` writes the weights
//! (`model.safetensors`, PyTorch's names) and the architecture beside them (`model.json`:
//! each child's kind and constructor arguments, the format tag and the weights' SHA-256);
//! `load_model` rebuilds the model from the JSON with no code and loads the weights.
//!
//! Safe by construction: the JSON can only name the layer kinds of
//! [`LayerSpec`](crate::LayerSpec), every field is type-checked, and the weights must be the
//! file the JSON was written with (its hash) and fit the rebuilt model exactly; anything
//! else is an error naming what is wrong, before a model is returned.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use taper_tensor::{write_atomic, DType, Device, LoadMode, ParamStore};

use crate::{error::Error, layers::sequential::Sequential, layers::spec::LayerSpec};

/// The format tag of `model.json`.
pub const MODEL_FORMAT: &str = "taper-model/1";

fn file_error(path: &Path, reason: impl ToString) -> Error {
    Error::Model {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// `model.json` beside `model.safetensors`.
fn json_path(weights: &Path) -> PathBuf {
    weights.with_extension("json")
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The innermost layer of `v` that fails to parse, named by its path
/// (`model.layers[2].layers[0]`), with its JSON and serde's reason.
fn locate(v: &Value, at: &str, err: serde_json::Error) -> String {
    if let Some(children) = v.get("layers").and_then(Value::as_array) {
        for (i, child) in children.iter().enumerate() {
            if let Err(e) = serde_json::from_value::<LayerSpec>(child.clone()) {
                return locate(child, &format!("{at}.layers[{i}]"), e);
            }
        }
    }
    format!("`{at}` ({v}): {err}")
}

impl Sequential {
    /// The architecture: each child's spec. A child that is not one of Taper's layers (a
    /// custom module) has none, and this is an error naming its index and type.
    pub fn spec(&self) -> crate::error::Result<LayerSpec> {
        let layers = self
            .specs
            .iter()
            .zip(&self.kinds)
            .enumerate()
            .map(|(i, (spec, kind))| {
                spec.clone().ok_or_else(|| Error::InvalidValue {
                    field: "layer",
                    value: format!("child {i} ({kind})"),
                    expected: "one of Taper's layers (only those can be saved as a model file)",
                })
            })
            .collect::<crate::error::Result<_>>()?;
        Ok(LayerSpec::Sequential { layers })
    }

    /// A `Sequential` built from specs, its children registered under `store` as 0, 1, 2….
    /// A child that cannot be built is an error naming its path (`layers[2].layers[0]`).
    pub fn from_specs(specs: &[LayerSpec], store: &ParamStore) -> crate::error::Result<Self> {
        Self::from_specs_at(specs, store, "layers")
    }

    fn from_specs_at(
        specs: &[LayerSpec],
        store: &ParamStore,
        at: &str,
    ) -> crate::error::Result<Self> {
        let mut model = Sequential::new(store);
        for (i, spec) in specs.iter().enumerate() {
            let here = format!("{at}[{i}]");
            let child = store.sub(i);
            let layer: crate::layers::spec::BoxedLayer = match spec {
                LayerSpec::Sequential { layers } => Box::new(Self::from_specs_at(
                    layers,
                    &child,
                    &format!("{here}.layers"),
                )?),
                _ => spec.build(&child).map_err(|e| Error::InvalidValue {
                    field: "layer",
                    value: format!("`{here}` ({}): {e}", spec.kind()),
                    expected: "a layer its constructor accepts",
                })?,
            };
            model.push_built(layer, spec.clone())?;
        }
        Ok(model)
    }

    /// Writes the weights to `path` (safetensors, PyTorch's names: PyTorch loads them) and
    /// the architecture to the same name with `.json`, each atomically, the JSON last and
    /// holding the weights' SHA-256.
    ///
    /// ```
    /// use taper_nn::{Activation, Linear, Sequential};
    /// use taper_tensor::{DType, Device, ModuleT, ParamStore, Tensor};
    /// let dir = std::env::temp_dir().join(format!("taper-model-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let store = ParamStore::new(&Device::Cpu, DType::F32);
    /// let model = Sequential::new(&store)
    ///     .append_with(|s| Linear::new(4, 8, s))?
    ///     .append(Activation::Relu)
    ///     .append_with(|s| Linear::new(8, 2, s))?;
    /// model.save_model(dir.join("model.safetensors"))?;
    ///
    /// // Elsewhere, with no code for the architecture:
    /// let (loaded, _store) = Sequential::load_model(dir.join("model.safetensors"), &Device::Cpu, DType::F32)?;
    /// let x = Tensor::ones((1, 4), DType::F32, &Device::Cpu)?;
    /// assert_eq!(loaded.forward_t(&x, false)?.to_vec2::<f32>()?, model.forward_t(&x, false)?.to_vec2::<f32>()?);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn save_model(&self, path: impl AsRef<Path>) -> crate::error::Result<()> {
        let path = path.as_ref();
        let spec = self.spec()?;
        self.store.save(path)?;
        let bytes = std::fs::read(path).map_err(|e| file_error(path, e))?;
        let doc = json!({
            "format": MODEL_FORMAT,
            "weights": path.file_name().map(|n| n.to_string_lossy().into_owned()),
            "weights_sha256": sha256_hex(&bytes),
            "model": spec,
        });
        let text = serde_json::to_vec_pretty(&doc).map_err(|e| file_error(path, e))?;
        write_atomic(json_path(path), &text)?;
        Ok(())
    }

    /// Rebuilds a model saved by [`Sequential::save_model`] from `path` and the `.json`
    /// beside it, on `device` in `dtype`: checks the format, the architecture and the
    /// weights' hash, builds the layers, and loads every weight strictly. Returns the model
    /// and the store holding its parameters.
    pub fn load_model(
        path: impl AsRef<Path>,
        device: &Device,
        dtype: DType,
    ) -> crate::error::Result<(Sequential, ParamStore)> {
        let path = path.as_ref();
        let jpath = json_path(path);
        let text = std::fs::read(&jpath).map_err(|e| file_error(&jpath, e))?;
        let doc: Value = serde_json::from_slice(&text).map_err(|e| file_error(&jpath, e))?;
        if doc["format"] != MODEL_FORMAT {
            return Err(file_error(
                &jpath,
                format!("`format` is {}; expected \"{MODEL_FORMAT}\"", doc["format"]),
            ));
        }
        let spec: LayerSpec = serde_json::from_value(doc["model"].clone())
            .map_err(|e| file_error(&jpath, locate(&doc["model"], "model", e)))?;
        let LayerSpec::Sequential { layers } = spec else {
            return Err(file_error(&jpath, "`model` must be a Sequential"));
        };
        let bytes = std::fs::read(path).map_err(|e| file_error(path, e))?;
        let want = doc["weights_sha256"].as_str().unwrap_or_default();
        if sha256_hex(&bytes) != want {
            return Err(file_error(
                path,
                "the weights' SHA-256 is not the one model.json records (a different or \
                 damaged file)",
            ));
        }
        let store = ParamStore::new(device, dtype);
        let model = Sequential::from_specs(&layers, &store)?;
        store.load(path, LoadMode::Strict)?;
        Ok((model, store))
    }
}
