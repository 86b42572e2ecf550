//! Model files for user-defined layers: a layer type describes itself with a serializable
//! configuration ([`CustomLayer`]) and is registered by name ([`register_layer`]); then a
//! `Sequential` holding it saves with `save_model` and is rebuilt by `load_model` like one of
//! Taper's own layers. In `model.json` it is `{"kind": "Custom", "name": …, "config": …}`.
//!
//! The same safety as the built-in kinds: `load_model` builds only registered types, through
//! their own constructor, from a configuration serde checks field by field (derive it with
//! `#[serde(deny_unknown_fields)]` to refuse unknown fields); an unregistered name or a bad
//! configuration is an error naming the layer's path in the model, before a model is
//! returned. Register every custom type before building a model that holds it (the
//! description is taken when the layer is appended) and before loading one.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use taper_tensor::{ModuleT, ParamStore};

use crate::error::{Error, Result};
use crate::layers::spec::BoxedLayer;

/// A user-defined layer that model files can hold: its kind's name, a configuration that
/// rebuilds it, and the constructor that does.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use taper_nn::{register_layer, CustomLayer, Linear, Sequential};
/// use taper_tensor::{candle, DType, Device, Module, ParamStore, Tensor};
///
/// /// y = x + fc(x)
/// struct Residual {
///     fc: Linear,
/// }
///
/// #[derive(Serialize, Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct ResidualConfig {
///     dim: usize,
/// }
///
/// impl Module for Residual {
///     fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
///         x + self.fc.forward(x)?
///     }
/// }
///
/// impl CustomLayer for Residual {
///     const KIND: &'static str = "Residual";
///     type Config = ResidualConfig;
///     fn config(&self) -> ResidualConfig {
///         ResidualConfig { dim: self.fc.in_features() }
///     }
///     fn from_config(
///         c: ResidualConfig,
///         store: &ParamStore,
///     ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
///         Ok(Residual { fc: Linear::new(c.dim, c.dim, &store.sub("fc"))? })
///     }
/// }
///
/// register_layer::<Residual>()?;
/// let store = ParamStore::new(&Device::Cpu, DType::F32);
/// let model = Sequential::new(&store)
///     .append_with(|s| Residual::from_config(ResidualConfig { dim: 4 }, s))?;
/// let dir = std::env::temp_dir().join(format!("taper-custom-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// model.save_model(dir.join("model.safetensors"))?;
/// let (loaded, _) = Sequential::load_model(dir.join("model.safetensors"), &Device::Cpu, DType::F32)?;
/// assert_eq!(loaded.len(), 1);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
/// ```
pub trait CustomLayer: ModuleT + Send + Sync + Sized + 'static {
    /// The kind's name in model files (`"name"` of a `Custom` entry); unique per type.
    const KIND: &'static str;

    /// What rebuilds the layer (its constructor's arguments), as JSON.
    type Config: Serialize + DeserializeOwned;

    /// This layer's configuration.
    fn config(&self) -> Self::Config;

    /// Builds the layer under `store` (its parameters initialized as the constructor does;
    /// `load_model` loads the weights afterwards). Any error will do (`?` on Taper's).
    fn from_config(
        config: Self::Config,
        store: &ParamStore,
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Send + Sync>>;
}

/// What the registry keeps of one type.
struct Registered {
    type_id: TypeId,
    describe: fn(&dyn Any) -> Option<Result<Value>>,
    build: fn(Value, &ParamStore) -> Result<BoxedLayer>,
}

fn registry() -> &'static RwLock<HashMap<&'static str, Registered>> {
    static REGISTRY: OnceLock<RwLock<HashMap<&'static str, Registered>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

fn describe<L: CustomLayer>(layer: &dyn Any) -> Option<Result<Value>> {
    let l = layer.downcast_ref::<L>()?;
    Some(
        serde_json::to_value(l.config()).map_err(|e| Error::InvalidValue {
            field: "config",
            value: format!("{}: {e}", L::KIND),
            expected: "a configuration serde can write as JSON",
        }),
    )
}

fn build<L: CustomLayer>(config: Value, store: &ParamStore) -> Result<BoxedLayer> {
    let config: L::Config = serde_json::from_value(config).map_err(|e| Error::InvalidValue {
        field: "config",
        value: format!("{}: {e}", L::KIND),
        expected: "the configuration the layer kind was saved with",
    })?;
    let layer = L::from_config(config, store).map_err(|e| Error::InvalidValue {
        field: "custom layer",
        value: format!("{}: {e}", L::KIND),
        expected: "a configuration its constructor accepts",
    })?;
    Ok(Box::new(layer))
}

/// Registers `L` for model files (process-wide). Registering the same type again is a
/// no-op; a second type under the same name, or the name of one of Taper's own kinds, is an
/// error.
pub fn register_layer<L: CustomLayer>() -> Result<()> {
    if crate::layers::spec::BUILT_IN_KINDS.contains(&L::KIND) || L::KIND == "Custom" {
        return Err(Error::InvalidValue {
            field: "CustomLayer::KIND",
            value: L::KIND.to_string(),
            expected: "a name that is not one of Taper's layer kinds",
        });
    }
    let mut reg = registry().write().unwrap_or_else(|p| p.into_inner());
    match reg.get(L::KIND) {
        Some(r) if r.type_id == TypeId::of::<L>() => Ok(()),
        Some(_) => Err(Error::InvalidValue {
            field: "CustomLayer::KIND",
            value: L::KIND.to_string(),
            expected: "a name no other registered type uses",
        }),
        None => {
            reg.insert(
                L::KIND,
                Registered {
                    type_id: TypeId::of::<L>(),
                    describe: describe::<L>,
                    build: build::<L>,
                },
            );
            Ok(())
        }
    }
}

/// The registered description of `layer`, if its type is registered: its kind's name and
/// configuration.
pub(crate) fn describe_registered(layer: &dyn Any) -> Option<Result<(String, Value)>> {
    let reg = registry().read().unwrap_or_else(|p| p.into_inner());
    reg.iter().find_map(|(name, r)| {
        (r.describe)(layer).map(|config| config.map(|c| (name.to_string(), c)))
    })
}

/// Builds the registered kind `name` from `config` under `store`.
pub(crate) fn build_registered(
    name: &str,
    config: Value,
    store: &ParamStore,
) -> Result<BoxedLayer> {
    let build = {
        let reg = registry().read().unwrap_or_else(|p| p.into_inner());
        reg.get(name).map(|r| r.build)
    };
    match build {
        Some(b) => b(config, store),
        None => Err(Error::InvalidValue {
            field: "custom layer",
            value: format!("`{name}`"),
            expected: "a kind registered with taper_nn::register_layer before load_model",
        }),
    }
}
