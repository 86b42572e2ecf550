//! NVRTC: a rule's CUDA kernel compiled to PTX at run time, once per distinct source.
//!
//! [`KernelSource::cuda`](crate::KernelSource::cuda) depends on the rule's configuration and
//! branches, never on the step (the step's scalars are the kernel's constants argument), so
//! a training run compiles one kernel per optimizer configuration, element type and branch
//! (RAdam's rectification adds a second) and then reuses it. [`compiled`] keeps the PTX of
//! every source compiled in this process, keyed by the full source text, and names each one
//! as a module for candle's per-device module cache ([`compiled_kernels`] counts them).
//!
//! Available with feature `nvrtc` (cudarc loading libnvrtc at run time, no GPU needed) or
//! `cuda` (candle's own cudarc, linked); not both in one build, since cudarc takes one of
//! linking or loading.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

#[cfg(feature = "cuda")]
use candle_core::cuda::cudarc;
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};

use crate::{error::Error, error::Result};

/// One compiled kernel: its PTX and the module name it is loaded under.
#[derive(Debug)]
pub(crate) struct Compiled {
    /// The module name, unique per source in this process (`taper_step_<n>`).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) module: String,
    /// The PTX NVRTC produced.
    pub(crate) ptx: String,
}

/// Every kernel compiled so far in this process, keyed by its CUDA source.
fn cache() -> &'static Mutex<HashMap<String, Arc<Compiled>>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Compiled>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// How many distinct kernels NVRTC has compiled in this process (each once: a second
/// request for the same source is served from the cache). Feature `nvrtc` or `cuda`.
///
/// ```no_run
/// use taper_optim::{compiled_kernels, Adam, KernelSource, Rule, Slots};
/// let adam = Adam::new(1e-3);
/// let k = KernelSource::of(&adam, &adam.prepare(1, &mut Slots::new(&mut [])));
/// let before = compiled_kernels();
/// k.ptx("float", "compute_90")?;
/// k.ptx("float", "compute_90")?; // cached
/// assert_eq!(compiled_kernels(), before + 1);
/// # Ok::<(), taper_optim::Error>(())
/// ```
pub fn compiled_kernels() -> usize {
    cache().lock().map(|c| c.len()).unwrap_or(0)
}

/// The PTX of `source` for `arch` (`None`: NVRTC's default target, which the driver
/// JIT-compiles for the GPU at load), compiled on the first request and cached after.
/// Compiled with IEEE division and square roots and no contraction into fused multiply-adds,
/// as the CPU paths compute, so the GPU and the CPU agree to rounding. `ty` names the
/// element type in errors.
pub(crate) fn compiled(
    source: &str,
    ty: &str,
    arch: Option<&'static str>,
) -> Result<Arc<Compiled>> {
    let key = format!("{arch:?}\n{source}");
    // A panic elsewhere while the lock was held leaves the map intact: keep using it.
    let mut cache = cache().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(hit) = cache.get(&key) {
        return Ok(hit.clone());
    }
    let opts = CompileOptions {
        arch,
        prec_div: Some(true),
        prec_sqrt: Some(true),
        fmad: Some(false),
        ..Default::default()
    };
    // cudarc panics when it cannot load libnvrtc (dynamic loading): report it as an error.
    let result = std::panic::catch_unwind(|| compile_ptx_with_opts(source, opts));
    let ptx = match result {
        Ok(Ok(ptx)) => ptx.to_src(),
        Ok(Err(e)) => {
            return Err(Error::KernelCompile {
                ty: ty.to_string(),
                reason: format!("{e:?}"),
            })
        }
        Err(_) => {
            return Err(Error::KernelCompile {
                ty: ty.to_string(),
                reason: "libnvrtc.so.13 could not be loaded (NVRTC, CUDA 13)".to_string(),
            })
        }
    };
    let compiled = Arc::new(Compiled {
        module: format!("taper_step_{}", cache.len()),
        ptx,
    });
    cache.insert(key, compiled.clone());
    Ok(compiled)
}
