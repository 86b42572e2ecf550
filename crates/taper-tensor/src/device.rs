//! Device selection: parse `cpu` / `cuda` / `cuda:N`, and pick the best device available.
//!
//! In a build without the `cuda` feature every CUDA request is an
//! [`Error::CudaNotCompiled`] that tells the user to rebuild with `--features cuda`.
//! Unlike candle's `Device::cuda_if_available`, [`best_device`] never errors: in a CUDA build
//! on a machine without a GPU it falls back to the CPU.

use crate::{Device, Error, Result};

/// Whether this build of Taper was compiled with CUDA support (the `cuda` feature).
pub fn cuda_compiled() -> bool {
    cfg!(feature = "cuda")
}

/// Whether a CUDA GPU can be used now: the `cuda` feature is on and GPU 0 opens.
pub fn cuda_is_available() -> bool {
    cuda_compiled() && Device::new_cuda(0).is_ok()
}

/// Parses a device string as PyTorch writes them: `cpu`, `cuda` (GPU 0) or `cuda:N`.
///
/// Case and surrounding whitespace are ignored. CUDA in a CPU-only build is an error that
/// says how to rebuild ([`Error::CudaNotCompiled`]); a CUDA build on a machine whose GPU
/// cannot be opened (a driver but no GPU, or no such ordinal) is
/// [`Error::CudaUnavailable`] with the driver's answer, not a panic.
///
/// ```
/// let cpu = taper_tensor::device("cpu")?;
/// assert!(cpu.is_cpu());
/// assert!(taper_tensor::device("tpu").is_err());
/// # Ok::<(), taper_tensor::Error>(())
/// ```
pub fn device(spec: &str) -> Result<Device> {
    match parse_device(spec)? {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Cuda(ordinal) => {
            if !cuda_compiled() {
                return Err(Error::CudaNotCompiled {
                    spec: spec.trim().to_string(),
                });
            }
            Device::new_cuda(ordinal).map_err(|e| Error::CudaUnavailable {
                spec: spec.trim().to_string(),
                reason: driver_message(e),
            })
        }
    }
}

/// candle's error without the backtrace it may carry (`RUST_BACKTRACE`), for a one-line
/// message.
fn driver_message(e: candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => driver_message(*inner),
        e => e.to_string(),
    }
}

/// The best device available: CUDA GPU 0 when this is a CUDA build and a GPU opens, else
/// the CPU. Never fails.
pub fn best_device() -> Device {
    if cuda_compiled() {
        if let Ok(d) = Device::new_cuda(0) {
            return d;
        }
    }
    Device::Cpu
}

/// A parsed device string, before any device is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The CPU.
    Cpu,
    /// The CUDA GPU of this ordinal.
    Cuda(usize),
}

/// Parses a device string without opening the device (so it also works in CPU-only builds).
pub fn parse_device(spec: &str) -> Result<DeviceSpec> {
    let s = spec.trim().to_ascii_lowercase();
    let bad = || Error::InvalidDevice {
        spec: spec.to_string(),
    };
    match s.as_str() {
        "cpu" => Ok(DeviceSpec::Cpu),
        "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
        _ => {
            let ordinal = s.strip_prefix("cuda:").ok_or_else(bad)?;
            ordinal.parse().map(DeviceSpec::Cuda).map_err(|_| bad())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pytorch_device_strings() {
        assert_eq!(parse_device("cpu").unwrap(), DeviceSpec::Cpu);
        assert_eq!(parse_device(" CPU ").unwrap(), DeviceSpec::Cpu);
        assert_eq!(parse_device("cuda").unwrap(), DeviceSpec::Cuda(0));
        assert_eq!(parse_device("cuda:1").unwrap(), DeviceSpec::Cuda(1));
        for bad in ["", "cuda:", "cuda:x", "cuda:-1", "tpu", "cuda1"] {
            let err = parse_device(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidDevice { .. }), "{bad}: {err}");
            assert!(err.to_string().contains("cuda:N"));
        }
    }

    #[test]
    fn cpu_and_best_device() {
        assert!(device("cpu").unwrap().is_cpu());
        if !cuda_compiled() {
            assert!(best_device().is_cpu());
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_in_cpu_only_build_says_how_to_rebuild() {
        for spec in ["cuda", "cuda:1"] {
            let err = device(spec).unwrap_err();
            assert!(matches!(err, Error::CudaNotCompiled { .. }));
            let msg = err.to_string();
            assert!(msg.contains("--features cuda"), "{msg}");
            assert!(msg.contains(spec), "{msg}");
        }
        assert!(!cuda_is_available());
    }
}
