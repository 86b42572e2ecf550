//! candle-nn interop: [`ParamStore::var_builder`] gives candle-nn layers a `VarBuilder` whose
//! variables are created in the store, under candle-nn's names, and initialised from
//! Taper's seeded generator ([`manual_seed`](crate::manual_seed)).
//!
//! Why it exists: candle-nn initialises a `VarMap`'s variables with candle's own random
//! numbers, which on the CPU come from an unseedable thread-local generator
//! (`Device::Cpu.set_seed` is an error), so a model built with `VarMap` differs on every run
//! whatever `manual_seed` says. Built through this builder instead, the same seed gives the
//! same weights, and the variables are the store's: Taper's optimizers, checkpoints and
//! `summary()` see them with no `adopt_varmap` step.
//!
//! Grad mode: candle-nn layers do not consult [`no_grad`](crate::no_grad); their outputs
//! track gradients whenever their inputs or weights are variables. Under `no_grad`,
//! detach the output (or run evaluation without calling `backward`) as with any candle op.

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::init::NormalOrUniform;
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use crate::{rand_uniform, randn, ParamStore};

/// A `SimpleBackend` that creates each requested variable in a [`ParamStore`].
struct StoreBackend(ParamStore);

impl SimpleBackend for StoreBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let make = |shape: &Shape, _: DType, _: &Device| -> crate::Result<Tensor> {
            let t = match init {
                Init::Const(v) => Tensor::ones(shape, dtype, dev)?.affine(v, 0.0)?,
                Init::Randn { mean, stdev } => randn(shape, mean, stdev, dtype, dev)?,
                Init::Uniform { lo, up } => rand_uniform(shape, lo, up, dtype, dev)?,
                Init::Kaiming {
                    dist,
                    fan,
                    non_linearity,
                } => {
                    let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
                    match dist {
                        NormalOrUniform::Uniform => {
                            let bound = 3f64.sqrt() * std;
                            rand_uniform(shape, -bound, bound, dtype, dev)?
                        }
                        NormalOrUniform::Normal => randn(shape, 0.0, std, dtype, dev)?,
                    }
                }
            };
            Ok(t)
        };
        self.0
            .get_or_create(name, s, make)
            .map_err(candle_core::Error::wrap)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        Ok(self
            .0
            .var(name)
            .map_err(candle_core::Error::wrap)?
            .as_tensor()
            .clone())
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.entry(&self.0.full_name(name)).is_some()
    }
}

impl ParamStore {
    /// A candle-nn `VarBuilder` that creates its variables in this store (under this
    /// view's prefix), initialised from Taper's seeded generator: candle-nn layers built
    /// with it are reproducible under [`manual_seed`](crate::manual_seed) and train with
    /// Taper's optimizers directly.
    ///
    /// ```
    /// use taper_tensor::{candle_nn, manual_seed, DType, Device, ParamStore};
    /// let weights = |seed| -> Result<Vec<f32>, Box<dyn std::error::Error>> {
    ///     manual_seed(seed);
    ///     let store = ParamStore::new(&Device::Cpu, DType::F32);
    ///     let fc = candle_nn::linear(4, 2, store.var_builder().pp("fc"))?;
    ///     assert_eq!(store.names(), ["fc.weight", "fc.bias"]);
    ///     Ok(fc.weight().flatten_all()?.to_vec1()?)
    /// };
    /// assert_eq!(weights(7)?, weights(7)?);
    /// assert_ne!(weights(7)?, weights(8)?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn var_builder(&self) -> VarBuilder<'static> {
        VarBuilder::from_backend(
            Box::new(StoreBackend(self.clone())),
            self.dtype(),
            self.device().clone(),
        )
    }
}
