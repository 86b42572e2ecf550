//! `StateDict` and `Stateful`: the one protocol by which every stateful piece of a training
//! run (schedulers, learning-rate controllers, early stopping, the loader position) saves
//! its state under a name and restores it.
//!
//! A [`StateDict`] is plain data: named tensors and named `f64` scalars. A piece writes its
//! fields as `{prefix}.{field}` ([`Stateful::save_state`]) and reads them back with the
//! checked getters ([`StateDict::counter`], [`StateDict::finite`], …), which name the key
//! and what was expected. [`Stateful::check_state`] validates without changing anything,
//! and [`Stateful::load_state`] changes nothing when it fails, so a checkpoint can check
//! every piece first and only then restore them all.
//!
//! In a file ([`StateDict::save`]), tensors are safetensors tensors and scalars sit in the
//! header's metadata in Rust's round-trip float format, so values come back bit for bit.
//!
//! ```
//! use taper_tensor::{StateDict, Stateful, Result};
//!
//! /// A counter that survives restarts.
//! #[derive(Default)]
//! struct Epochs(u64);
//!
//! impl Stateful for Epochs {
//!     fn save_state(&self, prefix: &str, out: &mut StateDict) -> Result<()> {
//!         out.set_scalar(prefix, "done", self.0 as f64);
//!         Ok(())
//!     }
//!     fn check_state(&self, prefix: &str, state: &StateDict) -> Result<()> {
//!         state.counter(prefix, "done").map(|_| ())
//!     }
//!     fn load_state(&mut self, prefix: &str, state: &StateDict) -> Result<()> {
//!         self.0 = state.counter(prefix, "done")?;
//!         Ok(())
//!     }
//! }
//!
//! let mut sd = StateDict::default();
//! Epochs(7).save_state("epochs", &mut sd)?;
//! let mut e = Epochs::default();
//! e.load_state("epochs", &sd)?;
//! assert_eq!(e.0, 7);
//! sd.set_scalar("epochs", "done", -1.0);
//! assert!(e.load_state("epochs", &sd).is_err());
//! assert_eq!(e.0, 7); // unchanged
//! # Ok::<(), taper_tensor::Error>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::{parse_safetensors, serialize_safetensors, write_atomic, Error, Result, Tensor};

/// The format tag of a state file.
pub const STATE_DICT_FORMAT: &str = "taper-state/1";

/// The bound on counters in state files: 2⁵³, the last integer every `f64` (and so every
/// scalar in a state file) represents exactly. One bound on both sides: a counter is saved
/// only if it is at most `MAX_COUNTER` (so it reads back exactly,
/// [`StateDict::set_counter`]), and loaded only if it is below it (so the next increment
/// still saves exactly, [`checked_counter`]). A count past the bound is an error naming
/// it, never a step silently lost to rounding.
pub const MAX_COUNTER: u64 = 1 << 53;

/// Named tensors and scalars: the saved state of one or more [`Stateful`] pieces.
#[derive(Debug, Clone, Default)]
pub struct StateDict {
    /// Tensors, `{prefix}.{field}`.
    pub tensors: BTreeMap<String, Tensor>,
    /// Scalars, `{prefix}.{field}`.
    pub scalars: BTreeMap<String, f64>,
}

fn key(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_string()
    } else {
        format!("{prefix}.{field}")
    }
}

fn bad(key: String, value: impl std::fmt::Display, expected: &str) -> Error {
    Error::State {
        key,
        reason: format!("is {value}; expected {expected}"),
    }
}

/// Checks that `v`, read from a state, is a counter that can be loaded: a whole number from
/// 0 to 2⁵³ − 1, so that counting on from it still saves exactly (see [`MAX_COUNTER`]);
/// `key` names it in the error.
pub fn checked_counter(key: &str, v: f64) -> Result<u64> {
    if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < MAX_COUNTER as f64 {
        Ok(v as u64)
    } else {
        Err(bad(
            key.to_string(),
            v,
            "a whole number from 0 to 2^53 - 1 (counting on from it must still save exactly)",
        ))
    }
}

/// Checks that counter `v` can be saved exactly as a state scalar (at most [`MAX_COUNTER`]);
/// `key` names it in the error.
pub fn savable_counter(key: &str, v: u64) -> Result<f64> {
    if v <= MAX_COUNTER {
        Ok(v as f64)
    } else {
        Err(Error::State {
            key: key.to_string(),
            reason: format!(
                "is {v}, past 2^53: a state file cannot hold it exactly, so it is not saved"
            ),
        })
    }
}

impl StateDict {
    /// Sets scalar `{prefix}.{field}`.
    pub fn set_scalar(&mut self, prefix: &str, field: &str, v: f64) {
        self.scalars.insert(key(prefix, field), v);
    }

    /// Sets counter `{prefix}.{field}`, which must be at most [`MAX_COUNTER`] (else an error
    /// naming it, and nothing is set).
    pub fn set_counter(&mut self, prefix: &str, field: &str, v: u64) -> Result<()> {
        let k = key(prefix, field);
        let x = savable_counter(&k, v)?;
        self.scalars.insert(k, x);
        Ok(())
    }

    /// Sets tensor `{prefix}.{field}` (shared, not copied).
    pub fn set_tensor(&mut self, prefix: &str, field: &str, t: &Tensor) {
        self.tensors.insert(key(prefix, field), t.clone());
    }

    /// Scalar `{prefix}.{field}`, any value (including ±∞ and NaN).
    pub fn scalar(&self, prefix: &str, field: &str) -> Result<f64> {
        let k = key(prefix, field);
        self.scalars.get(&k).copied().ok_or(Error::State {
            key: k,
            reason: "is missing".into(),
        })
    }

    /// Scalar `{prefix}.{field}`, which must be finite.
    pub fn finite(&self, prefix: &str, field: &str) -> Result<f64> {
        let v = self.scalar(prefix, field)?;
        if v.is_finite() {
            Ok(v)
        } else {
            Err(bad(key(prefix, field), v, "a finite number"))
        }
    }

    /// Scalar `{prefix}.{field}`, which must be finite or +∞/−∞ (not NaN): a "best so far"
    /// that starts at ±∞.
    pub fn not_nan(&self, prefix: &str, field: &str) -> Result<f64> {
        let v = self.scalar(prefix, field)?;
        if v.is_nan() {
            Err(bad(key(prefix, field), v, "a number or ±inf"))
        } else {
            Ok(v)
        }
    }

    /// Scalar `{prefix}.{field}` as a counter that can be loaded ([`checked_counter`]).
    pub fn counter(&self, prefix: &str, field: &str) -> Result<u64> {
        checked_counter(&key(prefix, field), self.scalar(prefix, field)?)
    }

    /// Scalar `{prefix}.{field}` as a flag: exactly 0 or 1.
    pub fn flag(&self, prefix: &str, field: &str) -> Result<bool> {
        match self.scalar(prefix, field)? {
            0.0 => Ok(false),
            1.0 => Ok(true),
            v => Err(bad(key(prefix, field), v, "0 or 1")),
        }
    }

    /// Tensor `{prefix}.{field}`, which must be a float tensor of shape `dims`.
    pub fn tensor(&self, prefix: &str, field: &str, dims: &[usize]) -> Result<&Tensor> {
        let k = key(prefix, field);
        let t = self.tensors.get(&k).ok_or_else(|| Error::State {
            key: k.clone(),
            reason: "is missing".into(),
        })?;
        if t.dims() != dims {
            return Err(bad(
                k,
                format!("of shape {:?}", t.dims()),
                &format!("{dims:?}"),
            ));
        }
        if !t.dtype().is_float() {
            return Err(bad(k, format!("{:?}", t.dtype()), "a float tensor"));
        }
        Ok(t)
    }

    /// Whether anything is stored under `prefix`.
    pub fn has(&self, prefix: &str) -> bool {
        let p = format!("{prefix}.");
        self.scalars
            .keys()
            .chain(self.tensors.keys())
            .any(|k| k.starts_with(&p))
    }

    /// Keys (tensors and scalars) that start with none of `prefixes` (each followed by a
    /// `.`): what no piece claims.
    pub fn unclaimed(&self, prefixes: &[&str]) -> Vec<String> {
        self.scalars
            .keys()
            .chain(self.tensors.keys())
            .filter(|k| !prefixes.iter().any(|p| k.starts_with(&format!("{p}."))))
            .cloned()
            .collect()
    }

    /// Encodes as safetensors bytes: tensors as tensors, scalars in the metadata.
    pub fn to_bytes(&self, origin: &Path) -> Result<Vec<u8>> {
        self.to_bytes_tagged(STATE_DICT_FORMAT, &[], origin)
    }

    /// [`StateDict::to_bytes`] with another format tag and extra string entries in the
    /// metadata (taper-optim's optimizer state adds the algorithm's name this way).
    pub fn to_bytes_tagged(
        &self,
        format: &str,
        extra: &[(&str, &str)],
        origin: &Path,
    ) -> Result<Vec<u8>> {
        let mut meta: HashMap<String, String> = self
            .scalars
            .iter()
            .map(|(k, v)| (k.clone(), format!("{v:?}")))
            .collect();
        meta.insert("format".into(), format.into());
        for (k, v) in extra {
            meta.insert(k.to_string(), v.to_string());
        }
        serialize_safetensors(
            self.tensors.iter().map(|(k, t)| (k.as_str(), t)),
            meta,
            origin,
        )
    }

    /// Decodes [`StateDict::to_bytes`]'s output, checking the format tag and that every
    /// scalar is a number; `origin` names the source in errors.
    pub fn from_bytes(bytes: &[u8], origin: &Path) -> Result<Self> {
        Ok(Self::from_bytes_tagged(bytes, origin, STATE_DICT_FORMAT, &[])?.0)
    }

    /// Decodes [`StateDict::to_bytes_tagged`]'s output: checks the format tag, takes out
    /// the `extra` string entries (returned in order, `None` where absent), and parses
    /// every other metadata entry as a scalar.
    pub fn from_bytes_tagged(
        bytes: &[u8],
        origin: &Path,
        format: &str,
        extra: &[&str],
    ) -> Result<(Self, Vec<Option<String>>)> {
        let (tensors, mut meta) = parse_safetensors(bytes, origin)?;
        let err = |reason: String| Error::File {
            path: origin.display().to_string(),
            reason,
        };
        if meta.remove("format").as_deref() != Some(format) {
            return Err(err(format!(
                "not a Taper state file (expected format `{format}`)"
            )));
        }
        let extra = extra.iter().map(|k| meta.remove(*k)).collect();
        let scalars = meta
            .iter()
            .map(|(k, v)| {
                parse_scalar(v)
                    .map(|x| (k.clone(), x))
                    .ok_or_else(|| err(format!("scalar `{k}` = `{v}` is not a number")))
            })
            .collect::<Result<_>>()?;
        let state = Self {
            tensors: tensors.into_iter().collect(),
            scalars,
        };
        Ok((state, extra))
    }

    /// Saves to a safetensors file, atomically (see [`crate::write_atomic`]).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        write_atomic(path, &self.to_bytes(path)?)
    }

    /// Reads a file written by [`StateDict::save`] (see [`StateDict::from_bytes`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_bytes(&bytes, path)
    }
}

/// Parses a scalar as written by `{:?}`: a decimal float, `inf`, `-inf` or `NaN`. Rejects
/// what Rust's parser also takes but no writer of these files produces (`+1`, `infinity`,
/// surrounding space).
pub fn parse_scalar(s: &str) -> Option<f64> {
    match s {
        "inf" => return Some(f64::INFINITY),
        "-inf" => return Some(f64::NEG_INFINITY),
        "NaN" => return Some(f64::NAN),
        _ => {}
    }
    let digits = s.strip_prefix('-').unwrap_or(s);
    if !digits.starts_with(|c: char| c.is_ascii_digit())
        || !digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
    {
        return None;
    }
    s.parse().ok()
}

/// Something whose state changes how training continues, saved and restored under a name.
///
/// Implementations write `{prefix}.{field}` keys, validate everything they read (counters
/// in range, scalars finite, tensors of the right shape), and change nothing when
/// [`Stateful::load_state`] fails. [`Stateful::check_state`] succeeds exactly when
/// `load_state` would.
pub trait Stateful {
    /// Writes the state under `prefix`.
    fn save_state(&self, prefix: &str, out: &mut StateDict) -> Result<()>;

    /// Checks that `state` holds a valid state under `prefix` for this object, changing
    /// nothing.
    fn check_state(&self, prefix: &str, state: &StateDict) -> Result<()>;

    /// Restores what [`Stateful::save_state`] wrote; on error nothing has changed.
    fn load_state(&mut self, prefix: &str, state: &StateDict) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_must_be_whole_and_in_range() {
        for ok in [0.0, 1.0, 12345.0, MAX_COUNTER as f64 - 1.0] {
            assert_eq!(checked_counter("k", ok).unwrap(), ok as u64);
        }
        for bad in [
            -1.0,
            2.5,
            f64::NAN,
            f64::INFINITY,
            18446744073709551616.0,
            MAX_COUNTER as f64,
            MAX_COUNTER as f64 * 2.0,
        ] {
            let e = checked_counter("opt.steps", bad).unwrap_err().to_string();
            assert!(e.contains("opt.steps"), "{e}");
        }
    }

    #[test]
    fn one_bound_on_both_sides_loses_no_step() {
        let mut sd = StateDict::default();
        // 2^53 − 1 loads; one more step gives 2^53, which still saves and reads back exactly.
        let last = MAX_COUNTER - 1;
        sd.set_counter("opt", "steps", last).unwrap();
        assert_eq!(sd.counter("opt", "steps").unwrap(), last);
        sd.set_counter("opt", "steps", last + 1).unwrap();
        assert_eq!(sd.scalar("opt", "steps").unwrap(), MAX_COUNTER as f64);
        // ...but a state at 2^53 does not load: its next step could not be saved exactly.
        let e = sd.counter("opt", "steps").unwrap_err().to_string();
        assert!(e.contains("opt.steps") && e.contains("2^53 - 1"), "{e}");
        // Past 2^53 nothing is saved: 2^53 + 1 would round to 2^53.
        let e = sd.set_counter("opt", "steps", MAX_COUNTER + 1).unwrap_err();
        assert!(e.to_string().contains("opt.steps"), "{e}");
        assert_eq!(sd.scalar("opt", "steps").unwrap(), MAX_COUNTER as f64);
    }

    #[test]
    fn scalars_parse_only_as_written() {
        for (s, v) in [
            ("1.5", 1.5),
            ("-0.0", -0.0),
            ("1e-8", 1e-8),
            ("inf", f64::INFINITY),
        ] {
            assert_eq!(parse_scalar(s), Some(v), "{s}");
        }
        assert!(parse_scalar("NaN").unwrap().is_nan());
        for s in ["+1", " 1", "infinity", "", "-", "0x10", "1.0 ", "e5", "nan"] {
            assert_eq!(parse_scalar(s), None, "{s:?}");
        }
    }
}
