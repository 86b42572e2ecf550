//! Sparse row updates: [`Optimizer::step_rows`] updates only the rows of a parameter that
//! its [`RowSparse`] gradient has (an embedding table's looked-up ids), leaving every other
//! row and its state untouched, as PyTorch's SparseAdam does ("lazy" updates). Any
//! element-wise rule can be stepped this way; [`SparseAdam`](crate::SparseAdam) is the
//! PyTorch form made for it.
//!
//! The present rows of the parameter and of each state tensor are gathered, the rule's
//! update runs on them as candle tensor ops, and the new rows are written back in place
//! with `scatter_set`: work and traffic proportional to the rows present, on any device.
//! The parameter's step count advances once per call that gives it rows, as in PyTorch.

use candle_core::Tensor;
use taper_tensor::RowSparse;

use crate::engine::optimizer::{init_state, Optimizer, StepReport};
use crate::engine::rule::{update, Rule};
use crate::engine::slot::Slots;
use crate::{error::Error, error::Result};

impl<R: Rule> Optimizer<R> {
    /// Updates the present rows of each named parameter from its row-sparse gradient.
    /// Parameters not named are not touched. A name this optimizer does not have, a shape
    /// that is not the parameter's, or a rule that cannot update rows (one that steps whole
    /// tensors, keeps state of another shape, or needs per-tensor norms) is an error raised
    /// before anything changes.
    ///
    /// ```
    /// use taper_optim::{Optimizer, SparseAdam};
    /// use taper_tensor::{DType, Device, ParamStore, RowSparse, Tensor};
    /// let store = ParamStore::new(&Device::Cpu, DType::F32);
    /// store.parameter("emb.weight", (4, 2), |s, dt, d| Ok(Tensor::ones(s, dt, d)?))?;
    /// let mut opt = Optimizer::new(SparseAdam::new(0.1), &store)?;
    /// let g = RowSparse::new(vec![2], Tensor::new(&[[1f32, -1.]], &Device::Cpu)?, &[4, 2])?;
    /// opt.step_rows(&[("emb.weight", g)])?;
    /// let w = store.var("emb.weight")?.as_tensor().to_vec2::<f32>()?;
    /// assert_eq!(w[0], [1., 1.]); // untouched
    /// assert!((w[2][0] - 0.9).abs() < 1e-6 && (w[2][1] - 1.1).abs() < 1e-6);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn step_rows(&mut self, grads: &[(&str, RowSparse)]) -> Result<StepReport> {
        // Check everything first.
        let mut work = Vec::with_capacity(grads.len());
        for (name, g) in grads {
            let (var, gi) = self
                .params()
                .find(|(n, _, _)| n == name)
                .map(|(_, v, gi)| (v.clone(), gi))
                .ok_or_else(|| {
                    Error::StateMismatch(format!("`{name}` is not a parameter of this optimizer"))
                })?;
            if g.dims() != var.dims() {
                return Err(Error::GradientShape {
                    name: name.to_string(),
                    expected: var.dims().to_vec(),
                    actual: g.dims().to_vec(),
                });
            }
            let rule = &self.groups()[gi].rule;
            let dims = var.dims();
            let same_shape = rule
                .slots_for(dims)
                .iter()
                .all(|&s| rule.state_shape(s, dims) == dims);
            if rule.whole_tensor(dims) || rule.needs_norms() || !same_shape {
                return Err(Error::UnsupportedParameter {
                    optimizer: R::NAME,
                    name: name.to_string(),
                    dims: dims.to_vec(),
                    expected: "row updates need an element-wise rule whose state has the \
                               parameter's shape (no whole-tensor steps or per-tensor norms)",
                });
            }
            if !var.as_tensor().is_contiguous() {
                return Err(Error::UnsupportedParameter {
                    optimizer: R::NAME,
                    name: name.to_string(),
                    dims: dims.to_vec(),
                    expected: "a contiguous parameter (rows are written in place)",
                });
            }
            work.push((name.to_string(), var, gi, g));
        }
        let mut report = StepReport::default();
        for (name, var, gi, g) in work {
            if g.rows().is_empty() {
                continue;
            }
            let rule = self.groups()[gi].rule.clone();
            if !self.state_map().contains_key(&name) {
                let st = init_state(&rule, &var)?;
                self.state_map_mut().insert(name.clone(), st);
            }
            let st = self.state_map_mut().get_mut(&name).expect("inserted above");
            st.step += 1;
            let s = rule.prepare(st.step, &mut Slots::new(&mut st.scalars));
            let n = g.rows().len();
            let width: usize = var.dims()[1..].iter().product();
            let rows = Tensor::from_slice(g.rows(), n, var.device())?;
            let scatter_index = rows
                .reshape((n, 1))?
                .broadcast_as((n, width))?
                .contiguous()?;
            let flat = |t: &Tensor| t.reshape((var.dims()[0], width));
            let p = flat(var.as_tensor())?;
            let p_rows = p.index_select(&rows, 0)?;
            let g_rows = g
                .values()
                .to_dtype(p.dtype())?
                .reshape((n, width))?
                .detach();
            let mut state_rows = st
                .tensors
                .iter()
                .map(|t| flat(t)?.index_select(&rows, 0))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let new = update(&rule, &s, &p_rows, &g_rows, &mut state_rows)?;
            p.scatter_set(&scatter_index, &new.to_dtype(p.dtype())?, 0)?;
            for (t, rows_now) in st.tensors.iter().zip(&state_rows) {
                flat(t)?.scatter_set(&scatter_index, &rows_now.to_dtype(t.dtype())?, 0)?;
            }
            report.updated += 1;
        }
        self.set_steps(self.steps() + 1);
        Ok(report)
    }
}
