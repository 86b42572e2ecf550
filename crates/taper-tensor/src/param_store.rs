//! `ParamStore`: a model's named trainable parameters and non-trainable buffers.
//!
//! Names are PyTorch's dotted state_dict names (`layers.0.weight`); entries keep their
//! insertion order, so iteration, saving and optimizer state are deterministic (candle-nn's
//! `VarMap` iterates in HashMap order). A store is a cheap handle: clones and [`ParamStore::sub`]
//! views share the same entries, the way layers register themselves under a sub-module prefix.
//!
//! Every parameter belongs to one layer, as in PyTorch: creating a parameter under a name
//! that a layer already took is an error ([`Error::AlreadyTaken`]), so two layers built on
//! the same view cannot share their weights by accident. Sharing is said out loud, with
//! [`ParamStore::shared`] (tied embeddings). A store copied with [`ParamStore::to`] holds
//! entries no layer has taken yet: building the model over it takes them over.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::{DType, Device, Error, Result, Shape, Tensor, Var};

/// Whether an entry is a parameter (optimized unless frozen) or a buffer (never optimized).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// A learnable parameter; `trainable` is false while it is frozen.
    Parameter {
        /// Whether optimizers and gradients see it.
        trainable: bool,
    },
    /// A non-trainable buffer such as BatchNorm's running mean: saved, never optimized.
    Buffer,
}

/// One named entry of a store.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The full dotted name.
    pub name: String,
    /// The variable holding the value (shared with the layers that use it).
    pub var: Var,
    /// Parameter or buffer.
    pub kind: ParamKind,
}

impl Entry {
    /// True for a parameter that is not frozen.
    pub fn is_trainable(&self) -> bool {
        self.kind == ParamKind::Parameter { trainable: true }
    }
}

#[derive(Debug, Default)]
struct Inner {
    entries: Vec<Entry>,
    index: HashMap<String, usize>,
    /// Per entry: whether a layer has taken it (created it, or reused a copied one). A
    /// second layer asking for a taken name is refused: it would share the weight silently.
    claimed: Vec<bool>,
}

/// A named, ordered collection of parameters and buffers, shared by handle.
///
/// ```
/// use taper_tensor::{ParamStore, Tensor, DType, Device};
/// let store = ParamStore::new(&Device::Cpu, DType::F32);
/// let layer = store.sub("layers").sub("0");
/// layer.parameter("weight", (3, 2), |s, dt, dev| Ok(Tensor::zeros(s, dt, dev)?))?;
/// layer.parameter("bias", 3, |s, dt, dev| Ok(Tensor::zeros(s, dt, dev)?))?;
/// assert_eq!(store.names(), ["layers.0.weight", "layers.0.bias"]);
/// assert_eq!(store.num_parameters(), 9);
/// store.freeze("layers.0.bias")?;
/// assert_eq!(store.num_trainable(), 6);
/// # Ok::<(), taper_tensor::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ParamStore {
    inner: Arc<RwLock<Inner>>,
    prefix: String,
    device: Device,
    dtype: DType,
}

/// Validates a dotted name: non-empty segments.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.split('.').any(str::is_empty) {
        return Err(Error::InvalidName {
            name: name.to_string(),
            reason: "names are dot-separated, non-empty segments (e.g. `layers.0.weight`)".into(),
        });
    }
    Ok(())
}

/// True when `name` equals `prefix` or lies under it at a dot boundary.
pub(crate) fn under(name: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || name == prefix
        || (name.starts_with(prefix) && name.as_bytes().get(prefix.len()) == Some(&b'.'))
}

impl ParamStore {
    /// An empty store whose new entries are created on `device` with `dtype`. The first CPU
    /// store also keeps freed memory in the process ([`retain_freed_memory`](crate::retain_freed_memory):
    /// no page faults for activations reallocated every step; `TAPER_MALLOC=system` opts out).
    pub fn new(device: &Device, dtype: DType) -> Self {
        if device.is_cpu() {
            crate::memory::retain_freed_memory();
        }
        Self {
            inner: Arc::default(),
            prefix: String::new(),
            device: device.clone(),
            dtype,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The device new entries are created on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype new entries are created with.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// This view's prefix (`""` at the root).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A view of the same store under the sub-module prefix `name` (like candle's `pp`).
    pub fn sub(&self, name: impl std::fmt::Display) -> Self {
        let mut s = self.clone();
        s.prefix = self.full_name(&name.to_string());
        s
    }

    /// The full dotted name of `name` in this view.
    pub fn full_name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// Creates parameter `name` of this view with `init`, which receives the shape, the
    /// store's dtype and its device.
    ///
    /// A name another layer already took is [`Error::AlreadyTaken`] (each layer needs its
    /// own prefix: [`ParamStore::sub`]; to share a weight on purpose use
    /// [`ParamStore::shared`]), and an existing buffer of that name is an
    /// [`Error::Conflict`]. An entry no layer has taken yet (a store copied with
    /// [`ParamStore::to`], an averaged model's) is taken over when its shape matches, so the
    /// model can be built over it; another shape is [`Error::ShapeMismatch`].
    ///
    /// ```
    /// use taper_tensor::{DType, Device, ParamStore, Tensor};
    /// let store = ParamStore::new(&Device::Cpu, DType::F32);
    /// let zeros = |s: &_, dt, d: &_| Ok(Tensor::zeros(s, dt, d)?);
    /// store.parameter("weight", (4, 4), zeros)?;
    /// let e = store.parameter("weight", (4, 4), zeros).unwrap_err().to_string();
    /// assert!(e.contains("store.sub("), "{e}");
    /// # Ok::<(), taper_tensor::Error>(())
    /// ```
    pub fn parameter(
        &self,
        name: &str,
        shape: impl Into<Shape>,
        init: impl FnOnce(&Shape, DType, &Device) -> Result<Tensor>,
    ) -> Result<Tensor> {
        self.get_or_init(
            name,
            shape.into(),
            init,
            ParamKind::Parameter { trainable: true },
            Claim::Take,
        )
        .map(Var::into_inner)
    }

    /// An existing parameter of this view, for a layer that shares it on purpose (tied input
    /// and output embeddings): no new parameter is created, the optimizer updates the one
    /// tensor once with the gradients of both uses, and it is saved once.
    ///
    /// ```
    /// use taper_tensor::{DType, Device, ParamStore, Tensor};
    /// let store = ParamStore::new(&Device::Cpu, DType::F32);
    /// let wte = store.sub("wte").parameter("weight", (10, 4), |s, dt, d| Ok(Tensor::ones(s, dt, d)?))?;
    /// let head = store.shared("wte.weight")?; // the output layer's weight is the embedding
    /// assert_eq!(head.id(), wte.id());
    /// assert_eq!(store.len(), 1);
    /// assert!(store.shared("lm_head.weight").is_err());
    /// # Ok::<(), taper_tensor::Error>(())
    /// ```
    pub fn shared(&self, name: &str) -> Result<Tensor> {
        let full = self.full_name(name);
        match self.entry(&full) {
            Some(e) if matches!(e.kind, ParamKind::Parameter { .. }) => Ok(e.var.into_inner()),
            Some(e) => Err(Error::Conflict {
                name: full,
                existing: kind_name(e.kind),
            }),
            None => Err(Error::UnknownName {
                hint: self.hint(&full),
                name: full,
            }),
        }
    }

    /// Gets or creates parameter `name` the way candle-nn's `VarBuilder` does: an existing
    /// entry of the same shape is returned whoever took it (candle-nn models tie weights by
    /// asking twice). Taper's layers use [`ParamStore::parameter`].
    pub(crate) fn get_or_create(
        &self,
        name: &str,
        shape: impl Into<Shape>,
        init: impl FnOnce(&Shape, DType, &Device) -> Result<Tensor>,
    ) -> Result<Tensor> {
        self.get_or_init(
            name,
            shape.into(),
            init,
            ParamKind::Parameter { trainable: true },
            Claim::Share,
        )
        .map(Var::into_inner)
    }

    /// Creates buffer `name` of this view with `init`, as [`ParamStore::parameter`] creates
    /// parameters (a taken name is an error; an untaken copied entry is taken over).
    /// Buffers are saved with the model and never given to an optimizer. The variable is
    /// returned so the layer can update it (e.g. running statistics) with `Var::set`.
    pub fn buffer(
        &self,
        name: &str,
        shape: impl Into<Shape>,
        init: impl FnOnce(&Shape, DType, &Device) -> Result<Tensor>,
    ) -> Result<Var> {
        self.get_or_init(name, shape.into(), init, ParamKind::Buffer, Claim::Take)
    }

    fn get_or_init(
        &self,
        name: &str,
        shape: Shape,
        init: impl FnOnce(&Shape, DType, &Device) -> Result<Tensor>,
        kind: ParamKind,
        claim: Claim,
    ) -> Result<Var> {
        let full = self.full_name(name);
        check_name(&full)?;
        let existing = self.read().index.get(&full).copied();
        if let Some(i) = existing {
            let mut inner = self.write();
            let e = inner.entries[i].clone();
            check_kind(&e, kind)?;
            if claim == Claim::Take && inner.claimed[i] {
                return Err(Error::AlreadyTaken {
                    name: full,
                    shape: e.var.dims().to_vec(),
                });
            }
            if e.var.dims() != shape.dims() {
                return Err(Error::ShapeMismatch {
                    name: full,
                    expected: shape.dims().to_vec(),
                    actual: e.var.dims().to_vec(),
                });
            }
            inner.claimed[i] = true;
            return Ok(e.var);
        }
        let t = init(&shape, self.dtype, &self.device)?;
        if t.dims() != shape.dims() {
            return Err(Error::ShapeMismatch {
                name: full,
                expected: shape.dims().to_vec(),
                actual: t.dims().to_vec(),
            });
        }
        self.push(full, Var::from_tensor(&t)?, kind, true)
    }

    /// Adds an existing variable under `name` (a full name in this view). No layer has
    /// taken it yet: a layer built over the store takes it over ([`ParamStore::parameter`]),
    /// which is how a model is built around given tensors. Re-adding the same variable is a
    /// no-op; a different variable under a used name is an [`Error::Conflict`].
    pub fn insert_var(&self, name: &str, var: Var, kind: ParamKind) -> Result<Var> {
        let full = self.full_name(name);
        check_name(&full)?;
        if let Some(e) = self.entry(&full) {
            if e.var.as_tensor().id() == var.as_tensor().id() {
                return Ok(e.var);
            }
            return Err(Error::Conflict {
                name: full,
                existing: kind_name(e.kind),
            });
        }
        self.push(full, var, kind, false)
    }

    fn push(&self, name: String, var: Var, kind: ParamKind, claimed: bool) -> Result<Var> {
        let mut inner = self.write();
        if let Some(&i) = inner.index.get(&name) {
            // Another handle registered it between our lookup and now.
            return Err(Error::Conflict {
                name,
                existing: kind_name(inner.entries[i].kind),
            });
        }
        let i = inner.entries.len();
        inner.index.insert(name.clone(), i);
        inner.entries.push(Entry {
            name,
            var: var.clone(),
            kind,
        });
        inner.claimed.push(claimed);
        Ok(var)
    }

    /// The entry with this full name, if any (a lookup ignores the view's prefix).
    pub fn entry(&self, full_name: &str) -> Option<Entry> {
        let inner = self.read();
        inner
            .index
            .get(full_name)
            .map(|&i| inner.entries[i].clone())
    }

    /// The variable `name` of this view, or an error naming it.
    pub fn var(&self, name: &str) -> Result<Var> {
        let full = self.full_name(name);
        self.entry(&full)
            .map(|e| e.var)
            .ok_or_else(|| Error::UnknownName {
                hint: self.hint(&full),
                name: full,
            })
    }

    fn hint(&self, name: &str) -> String {
        let last = name.rsplit('.').next().unwrap_or(name);
        let near: Vec<String> = self
            .read()
            .entries
            .iter()
            .filter(|e| e.name.ends_with(last))
            .take(3)
            .map(|e| e.name.clone())
            .collect();
        if near.is_empty() {
            String::new()
        } else {
            format!(" (did you mean {}?)", near.join(", "))
        }
    }

    /// All entries under this view's prefix, in insertion order.
    pub fn entries(&self) -> Vec<Entry> {
        self.read()
            .entries
            .iter()
            .filter(|e| under(&e.name, &self.prefix))
            .cloned()
            .collect()
    }

    /// The full names of all entries (parameters and buffers) of this view, in order.
    pub fn names(&self) -> Vec<String> {
        self.entries().into_iter().map(|e| e.name).collect()
    }

    fn select(&self, keep: impl Fn(&Entry) -> bool) -> Vec<(String, Var)> {
        self.entries()
            .into_iter()
            .filter(|e| keep(e))
            .map(|e| (e.name, e.var))
            .collect()
    }

    /// All parameters, frozen ones included (PyTorch's `named_parameters`), in order.
    pub fn named_parameters(&self) -> Vec<(String, Var)> {
        self.select(|e| matches!(e.kind, ParamKind::Parameter { .. }))
    }

    /// The parameters an optimizer should update: not frozen, not buffers.
    pub fn trainable(&self) -> Vec<(String, Var)> {
        self.select(Entry::is_trainable)
    }

    /// The buffers (PyTorch's `named_buffers`), in order.
    pub fn buffers(&self) -> Vec<(String, Var)> {
        self.select(|e| e.kind == ParamKind::Buffer)
    }

    /// Parameters and buffers as tensors, in order: what a checkpoint saves.
    pub fn state_dict(&self) -> Vec<(String, Tensor)> {
        self.entries()
            .into_iter()
            .map(|e| (e.name, e.var.as_tensor().clone()))
            .collect()
    }

    /// Number of entries (parameters and buffers) in this view.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// True when this view has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of parameter elements (frozen ones included, buffers excluded).
    pub fn num_parameters(&self) -> usize {
        count(&self.named_parameters())
    }

    /// Number of trainable parameter elements.
    pub fn num_trainable(&self) -> usize {
        count(&self.trainable())
    }

    /// Freezes every parameter named `name` or under the prefix `name` (relative to this
    /// view); returns how many were frozen. Matching nothing is an error naming `name`.
    pub fn freeze(&self, name: &str) -> Result<usize> {
        self.set_trainable(name, false)
    }

    /// Unfreezes parameters by name or prefix, like [`ParamStore::freeze`].
    pub fn unfreeze(&self, name: &str) -> Result<usize> {
        self.set_trainable(name, true)
    }

    fn set_trainable(&self, name: &str, trainable: bool) -> Result<usize> {
        let full = self.full_name(name);
        let mut n = 0;
        for e in self.write().entries.iter_mut() {
            if let ParamKind::Parameter { .. } = e.kind {
                if under(&e.name, &full) {
                    e.kind = ParamKind::Parameter { trainable };
                    n += 1;
                }
            }
        }
        if n == 0 {
            return Err(Error::UnknownName {
                hint: self.hint(&full),
                name: full,
            });
        }
        Ok(n)
    }

    /// A deep copy of this view on another device and dtype, with the same names, order and
    /// frozen flags. Floating-point entries are cast to `dtype`; integer buffers keep theirs.
    /// No layer has taken the copies yet: build the model again over the copy, and its
    /// layers take them over (see [`ParamStore::parameter`]).
    pub fn to(&self, device: &Device, dtype: DType) -> Result<ParamStore> {
        let out = ParamStore::new(device, dtype);
        for e in self.entries() {
            let t = e.var.as_tensor().to_device(device)?;
            let t = if t.dtype().is_float() {
                t.to_dtype(dtype)?
            } else {
                t
            };
            // Same device and dtype return the variable itself; detaching makes
            // `from_tensor` copy the storage, so the copy never aliases the original.
            out.push(e.name, Var::from_tensor(&t.detach())?, e.kind, false)?;
        }
        Ok(out)
    }

    /// [`ParamStore::to`] with this store's dtype.
    pub fn to_device(&self, device: &Device) -> Result<ParamStore> {
        self.to(device, self.dtype)
    }

    /// [`ParamStore::to`] on this store's device.
    pub fn to_dtype(&self, dtype: DType) -> Result<ParamStore> {
        self.to(&self.device, dtype)
    }

    /// Adopts every variable of a candle-nn `VarMap` as a trainable parameter under this view,
    /// in natural name order (`layers.2` before `layers.10`), sharing the variables: a model
    /// built from candle-nn layers then trains with Taper's optimizers. Returns the count.
    pub fn adopt_varmap(&self, varmap: &candle_nn::VarMap) -> Result<usize> {
        let mut vars: Vec<(String, Var)> = {
            let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
            data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        vars.sort_by(|a, b| natural_cmp(&a.0, &b.0));
        let n = vars.len();
        for (name, var) in vars {
            self.insert_var(&name, var, ParamKind::Parameter { trainable: true })?;
        }
        Ok(n)
    }

    /// A new store holding the variables of a candle-nn `VarMap` (see [`ParamStore::adopt_varmap`]).
    pub fn from_varmap(varmap: &candle_nn::VarMap, device: &Device, dtype: DType) -> Result<Self> {
        let s = Self::new(device, dtype);
        s.adopt_varmap(varmap)?;
        Ok(s)
    }

    /// A table of the entries: name, shape, dtype, trainable or frozen or buffer.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for e in self.entries() {
            let role = match e.kind {
                ParamKind::Parameter { trainable: true } => "trainable",
                ParamKind::Parameter { trainable: false } => "frozen",
                ParamKind::Buffer => "buffer",
            };
            out += &format!(
                "{:<40} {:<16} {:?} {role}\n",
                e.name,
                format!("{:?}", e.var.dims()),
                e.var.dtype()
            );
        }
        out += &format!(
            "{} parameters ({} trainable)\n",
            self.num_parameters(),
            self.num_trainable()
        );
        out
    }
}

/// Whether getting an existing entry takes it for one layer ([`ParamStore::parameter`]) or
/// shares it (candle-nn's `VarBuilder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    Take,
    Share,
}

fn check_kind(e: &Entry, wanted: ParamKind) -> Result<()> {
    let same = matches!(
        (e.kind, wanted),
        (ParamKind::Buffer, ParamKind::Buffer)
            | (ParamKind::Parameter { .. }, ParamKind::Parameter { .. })
    );
    if same {
        Ok(())
    } else {
        Err(Error::Conflict {
            name: e.name.clone(),
            existing: kind_name(e.kind),
        })
    }
}

fn kind_name(kind: ParamKind) -> &'static str {
    match kind {
        ParamKind::Parameter { .. } => "parameter",
        ParamKind::Buffer => "buffer",
    }
}

fn count(vars: &[(String, Var)]) -> usize {
    vars.iter().map(|(_, v)| v.elem_count()).sum()
}

/// Compares dotted names segment by segment, numeric segments as numbers.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let mut xs = a.split('.');
    let mut ys = b.split('.');
    loop {
        match (xs.next(), ys.next()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => {
                let o = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(i), Ok(j)) => i.cmp(&j),
                    _ => x.cmp(y),
                };
                if o.is_ne() {
                    return o;
                }
            }
        }
    }
}
