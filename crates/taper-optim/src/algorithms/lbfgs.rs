//! L-BFGS (Liu & Nocedal 1989), in PyTorch's form: a quasi-Newton method that keeps the last
//! `history_size` steps and gradient changes, turns them into a direction with the
//! two-loop recursion, and re-evaluates the loss through a closure, up to `max_iter` times
//! per [`LbfgsOptimizer::step_with`], with a fixed step or a strong-Wolfe line search.
//!
//! PyTorch counterpart: `torch.optim.LBFGS(lr=1, max_iter=20, max_eval=None (max_iter·5/4),
//! tolerance_grad=1e-7, tolerance_change=1e-9, history_size=100, line_search_fn=None,
//! maximize=False)`, ported step for step (the first step's size min(1, 1/‖g‖₁)·lr, the
//! curvature test yᵀs > 1e-10, every stopping rule, the cubic-interpolation line search with
//! c₁ = 1e-4, c₂ = 0.9). PyTorch does its vector arithmetic in the parameters' dtype; Taper
//! does it in float64 over all parameters flattened in order, then writes them back.
//!
//! Unlike the [`Rule`](crate::Rule)s, L-BFGS needs the loss again inside a step and keeps one
//! state for all parameters together (as in PyTorch, which also allows one group only), so
//! it is an optimizer of its own, driven by a closure that recomputes the loss from the
//! current parameters:
//!
//! ```
//! use taper_optim::{Lbfgs, LbfgsOptimizer, LineSearch};
//! use taper_tensor::{DType, Device, ParamStore, Tensor};
//! let store = ParamStore::new(&Device::Cpu, DType::F64);
//! let x = store.parameter("x", 2, |_, _, d| Ok(Tensor::new(&[-1.2f64, 1.0], d)?))?;
//! let mut opt = LbfgsOptimizer::new(Lbfgs::new(1.0).line_search(LineSearch::StrongWolfe), &store)?;
//! // Rosenbrock: (1 − a)² + 100(b − a²)², minimum at (1, 1).
//! let rosenbrock = || {
//!     let (a, b) = (x.narrow(0, 0, 1)?, x.narrow(0, 1, 1)?);
//!     let t1 = a.affine(-1.0, 1.0)?.sqr()?;
//!     let t2 = (b - a.sqr()?)?.sqr()?.affine(100.0, 0.0)?;
//!     Ok((t1 + t2)?.sum_all()?)
//! };
//! for _ in 0..10 {
//!     opt.step_with(rosenbrock)?;
//! }
//! let v = x.to_vec1::<f64>()?;
//! assert!((v[0] - 1.0).abs() < 1e-4 && (v[1] - 1.0).abs() < 1e-4, "{v:?}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::VecDeque;

use candle_core::{DType, Tensor, Var};
use taper_tensor::{Gradients, ParamStore, StateDict, Stateful};

use crate::engine::any::AnyOptimizer;
use crate::engine::optimizer::StepReport;
use crate::engine::state::OptimizerState;
use crate::error::check;
use crate::lr::control::LrTarget;
use crate::{error::Error, error::Result};

/// The line search of [`Lbfgs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LineSearch {
    /// A fixed step of `lr` (PyTorch's `line_search_fn=None`, default).
    #[default]
    None,
    /// The strong-Wolfe line search (`line_search_fn="strong_wolfe"`).
    StrongWolfe,
}

/// L-BFGS's hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lbfgs {
    /// The step size (default 1).
    pub lr: f64,
    /// Iterations per `step_with` (default 20).
    pub max_iter: usize,
    /// Loss evaluations per `step_with`; `None` (default) is `max_iter·5/4`.
    pub max_eval: Option<usize>,
    /// Stop when every gradient element is at most this in magnitude (default 1e-7).
    pub tolerance_grad: f64,
    /// Stop when the loss or the step changes less than this (default 1e-9).
    pub tolerance_change: f64,
    /// How many past updates the curvature estimate keeps (default 100).
    pub history_size: usize,
    /// The line search (default none).
    pub line_search: LineSearch,
    /// Maximize the objective instead (default false).
    pub maximize: bool,
}

impl Default for Lbfgs {
    fn default() -> Self {
        Self::new(1.0)
    }
}

impl Lbfgs {
    /// PyTorch's LBFGS with step size `lr`.
    pub fn new(lr: f64) -> Self {
        Self {
            lr,
            max_iter: 20,
            max_eval: None,
            tolerance_grad: 1e-7,
            tolerance_change: 1e-9,
            history_size: 100,
            line_search: LineSearch::None,
            maximize: false,
        }
    }

    /// Builder: the step size η.
    pub fn lr(mut self, lr: f64) -> Self {
        self.lr = lr;
        self
    }

    /// Builder: iterations per step.
    pub fn max_iter(mut self, n: usize) -> Self {
        self.max_iter = n;
        self
    }

    /// Builder: loss evaluations per step.
    pub fn max_eval(mut self, n: usize) -> Self {
        self.max_eval = Some(n);
        self
    }

    /// Builder: stop when every gradient element is at most this in magnitude.
    pub fn tolerance_grad(mut self, tolerance: f64) -> Self {
        self.tolerance_grad = tolerance;
        self
    }

    /// Builder: stop when the loss or the step changes less than this.
    pub fn tolerance_change(mut self, tolerance: f64) -> Self {
        self.tolerance_change = tolerance;
        self
    }

    /// Builder: the history size.
    pub fn history_size(mut self, n: usize) -> Self {
        self.history_size = n;
        self
    }

    /// Builder: the line search.
    pub fn line_search(mut self, ls: LineSearch) -> Self {
        self.line_search = ls;
        self
    }

    /// Builder: maximize instead of minimize.
    pub fn maximize(mut self, on: bool) -> Self {
        self.maximize = on;
        self
    }

    fn validate(&self) -> Result<()> {
        let n = "LBFGS";
        check(
            n,
            "lr",
            self.lr,
            self.lr >= 0.0 && self.lr.is_finite(),
            "a finite lr >= 0",
        )?;
        check(
            n,
            "max_iter",
            self.max_iter as f64,
            self.max_iter >= 1,
            "max_iter >= 1",
        )?;
        if let Some(e) = self.max_eval {
            check(n, "max_eval", e as f64, e >= 1, "max_eval >= 1")?;
        }
        check(
            n,
            "history_size",
            self.history_size as f64,
            self.history_size >= 1,
            "history_size >= 1",
        )?;
        for (field, v) in [
            ("tolerance_grad", self.tolerance_grad),
            ("tolerance_change", self.tolerance_change),
        ] {
            check(
                n,
                field,
                v,
                v >= 0.0 && v.is_finite(),
                "a finite tolerance >= 0",
            )?;
        }
        Ok(())
    }

    fn max_eval_or_default(&self) -> usize {
        self.max_eval.unwrap_or(self.max_iter * 5 / 4)
    }
}

/// L-BFGS's state across steps, as PyTorch keeps it.
#[derive(Debug, Clone, Default, PartialEq)]
struct State {
    func_evals: u64,
    n_iter: u64,
    d: Vec<f64>,
    t: f64,
    old_dirs: VecDeque<Vec<f64>>,
    old_stps: VecDeque<Vec<f64>>,
    ro: VecDeque<f64>,
    h_diag: f64,
    prev_flat_grad: Vec<f64>,
    prev_loss: f64,
}

/// An L-BFGS optimizer over named parameters, stepped with a loss closure.
#[derive(Debug, Clone)]
pub struct LbfgsOptimizer {
    config: Lbfgs,
    params: Vec<(String, Var)>,
    state: State,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Rounds to the precision PyTorch computes in: with float32 parameters PyTorch keeps its
/// vectors and tensor scalars in float32, so each value it stores as a float32 tensor is
/// rounded to float32 here (the arithmetic before it runs in float64, like a fused
/// multiply-add). With float64 parameters nothing is rounded.
#[derive(Debug, Clone, Copy)]
struct Precision(bool);

impl Precision {
    #[inline]
    fn r(self, x: f64) -> f64 {
        if self.0 {
            x as f32 as f64
        } else {
            x
        }
    }
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// `_cubic_interpolate`: the minimizer of the cubic through (x1, f1, g1), (x2, f2, g2),
/// clamped to `bounds` (default the interval).
fn cubic_interpolate(
    (x1, f1, g1): (f64, f64, f64),
    (x2, f2, g2): (f64, f64, f64),
    bounds: Option<(f64, f64)>,
) -> f64 {
    let (lo, hi) = bounds.unwrap_or(if x1 <= x2 { (x1, x2) } else { (x2, x1) });
    let d1 = g1 + g2 - 3.0 * (f1 - f2) / (x1 - x2);
    let d2_square = d1 * d1 - g1 * g2;
    if d2_square >= 0.0 {
        let d2 = d2_square.sqrt();
        let min_pos = if x1 <= x2 {
            x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2.0 * d2))
        } else {
            x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2.0 * d2))
        };
        min_pos.max(lo).min(hi)
    } else {
        (lo + hi) / 2.0
    }
}

impl LbfgsOptimizer {
    /// L-BFGS over the trainable parameters of `store`, all in one group (PyTorch's LBFGS
    /// takes one group only).
    pub fn new(config: Lbfgs, store: &ParamStore) -> Result<Self> {
        Self::from_vars(config, store.trainable())
    }

    /// L-BFGS over any named variables.
    pub fn from_vars(config: Lbfgs, params: Vec<(String, Var)>) -> Result<Self> {
        config.validate()?;
        if params.is_empty() {
            return Err(Error::NoParameters { optimizer: "LBFGS" });
        }
        Ok(Self {
            config,
            params,
            state: State::default(),
        })
    }

    /// The hyperparameters.
    pub fn config(&self) -> &Lbfgs {
        &self.config
    }

    /// Total loss evaluations so far.
    pub fn func_evals(&self) -> u64 {
        self.state.func_evals
    }

    /// Total iterations so far.
    pub fn n_iter(&self) -> u64 {
        self.state.n_iter
    }

    /// Float32 rounding when every parameter is float32 (else float64 throughout).
    fn precision(&self) -> Precision {
        Precision(self.params.iter().all(|(_, v)| v.dtype() == DType::F32))
    }

    fn numel(&self) -> usize {
        self.params.iter().map(|(_, v)| v.elem_count()).sum()
    }

    fn flat_params(&self) -> Result<Vec<f64>> {
        let mut out = Vec::with_capacity(self.numel());
        for (_, v) in &self.params {
            out.extend(
                v.as_tensor()
                    .flatten_all()?
                    .to_dtype(DType::F64)?
                    .to_vec1::<f64>()?,
            );
        }
        Ok(out)
    }

    fn set_flat(&self, x: &[f64]) -> Result<()> {
        let mut offset = 0;
        for (_, v) in &self.params {
            let n = v.elem_count();
            let t = Tensor::from_slice(&x[offset..offset + n], v.dims(), v.device())?
                .to_dtype(v.dtype())?;
            v.set(&t)?;
            offset += n;
        }
        Ok(())
    }

    /// θ ← θ + t·d.
    fn add_grad(&self, t: f64, d: &[f64]) -> Result<()> {
        // PyTorch's `add_(d, alpha=t)` casts t to the parameters' dtype.
        let t = self.precision().r(t);
        let mut x = self.flat_params()?;
        for (xi, di) in x.iter_mut().zip(d) {
            *xi += t * di;
        }
        self.set_flat(&x)
    }

    /// Runs the closure: the loss (negated when maximizing) and the flat gradient (zeros
    /// for a parameter without one).
    fn evaluate(&self, closure: &mut dyn FnMut() -> Result<Tensor>) -> Result<(f64, Vec<f64>)> {
        let loss = closure()?;
        let value = loss.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
        let grads = Gradients::from_grad_store(&loss.backward()?, &self.params);
        let mut flat = Vec::with_capacity(self.numel());
        for (name, v) in &self.params {
            match grads.get(name) {
                Some(g) => flat.extend(g.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?),
                None => flat.extend(std::iter::repeat_n(0.0, v.elem_count())),
            }
        }
        if self.config.maximize {
            flat.iter_mut().for_each(|g| *g = -*g);
            return Ok((-value, flat));
        }
        Ok((value, flat))
    }

    /// `_directional_evaluate`: the loss and gradient at x + t·d, leaving the parameters at x.
    fn directional(
        &self,
        closure: &mut dyn FnMut() -> Result<Tensor>,
        x: &[f64],
        t: f64,
        d: &[f64],
    ) -> Result<(f64, Vec<f64>)> {
        self.add_grad(t, d)?;
        let out = self.evaluate(closure);
        self.set_flat(x)?;
        out
    }

    /// One L-BFGS step: up to `max_iter` iterations, each re-evaluating the loss through
    /// `closure`, which must compute it from the current parameters. Returns the loss at the
    /// start of the step, as PyTorch does. On an error from the closure the parameters may
    /// have moved by the iterations already done.
    pub fn step_with(&mut self, mut closure: impl FnMut() -> Result<Tensor>) -> Result<f64> {
        let closure: &mut dyn FnMut() -> Result<Tensor> = &mut closure;
        let c = self.config;
        let max_eval = c.max_eval_or_default();
        let (mut loss, mut flat_grad) = self.evaluate(closure)?;
        let orig_loss = if c.maximize { -loss } else { loss };
        let mut current_evals = 1usize;
        self.state.func_evals += 1;
        if max_abs(&flat_grad) <= c.tolerance_grad {
            return Ok(orig_loss);
        }
        let mut st = std::mem::take(&mut self.state);
        let result = self.iterate(
            &mut st,
            closure,
            &mut loss,
            &mut flat_grad,
            &mut current_evals,
            max_eval,
        );
        self.state = st;
        result.map(|()| orig_loss)
    }

    #[allow(clippy::too_many_arguments)]
    fn iterate(
        &self,
        st: &mut State,
        closure: &mut dyn FnMut() -> Result<Tensor>,
        loss: &mut f64,
        flat_grad: &mut Vec<f64>,
        current_evals: &mut usize,
        max_eval: usize,
    ) -> Result<()> {
        let c = self.config;
        let p = self.precision();
        let pdot = |a: &[f64], b: &[f64]| p.r(dot(a, b));
        let mut n_iter = 0;
        while n_iter < c.max_iter {
            n_iter += 1;
            st.n_iter += 1;
            if st.n_iter == 1 {
                st.d = flat_grad.iter().map(|g| -g).collect();
                st.old_dirs.clear();
                st.old_stps.clear();
                st.ro.clear();
                st.h_diag = 1.0;
            } else {
                let y: Vec<f64> = flat_grad
                    .iter()
                    .zip(&st.prev_flat_grad)
                    .map(|(a, b)| p.r(a - b))
                    .collect();
                let t = p.r(st.t);
                let s: Vec<f64> = st.d.iter().map(|d| p.r(d * t)).collect();
                let ys = pdot(&y, &s);
                if ys > 1e-10 {
                    if st.old_dirs.len() == c.history_size {
                        st.old_dirs.pop_front();
                        st.old_stps.pop_front();
                        st.ro.pop_front();
                    }
                    st.h_diag = p.r(ys / pdot(&y, &y));
                    st.old_dirs.push_back(y);
                    st.old_stps.push_back(s);
                    st.ro.push_back(p.r(1.0 / ys));
                }
                let num_old = st.old_dirs.len();
                let mut al = vec![0.0; num_old];
                let mut q: Vec<f64> = flat_grad.iter().map(|g| -g).collect();
                for i in (0..num_old).rev() {
                    al[i] = p.r(pdot(&st.old_stps[i], &q) * st.ro[i]);
                    for (qj, yj) in q.iter_mut().zip(&st.old_dirs[i]) {
                        *qj = p.r(*qj - al[i] * yj);
                    }
                }
                let mut r: Vec<f64> = q.iter().map(|v| p.r(v * st.h_diag)).collect();
                let pairs = st.old_dirs.iter().zip(&st.old_stps).zip(&st.ro).zip(&al);
                for (((y, s), ro), al_i) in pairs {
                    let be_i = p.r(pdot(y, &r) * ro);
                    let alpha = p.r(al_i - be_i);
                    for (rj, sj) in r.iter_mut().zip(s) {
                        *rj = p.r(*rj + alpha * sj);
                    }
                }
                st.d = r;
            }
            st.prev_flat_grad.clone_from(flat_grad);
            st.prev_loss = *loss;
            st.t = if st.n_iter == 1 {
                let l1 = p.r(flat_grad.iter().map(|g| g.abs()).sum::<f64>());
                let inv = p.r(1.0 / l1);
                if inv < 1.0 {
                    p.r(inv * c.lr)
                } else {
                    c.lr
                }
            } else {
                c.lr
            };
            let gtd = pdot(flat_grad, &st.d);
            if gtd > -c.tolerance_change {
                break;
            }
            let ls_func_evals;
            let mut opt_cond = false;
            match c.line_search {
                LineSearch::StrongWolfe => {
                    let x = self.flat_params()?;
                    let (f, g, t, evals) = self.strong_wolfe(
                        closure,
                        &x,
                        st.t,
                        &st.d,
                        *loss,
                        flat_grad,
                        gtd,
                        max_eval.saturating_sub(*current_evals),
                    )?;
                    *loss = f;
                    *flat_grad = g;
                    st.t = t;
                    ls_func_evals = evals;
                    self.add_grad(st.t, &st.d)?;
                    opt_cond = max_abs(flat_grad) <= c.tolerance_grad;
                }
                LineSearch::None => {
                    self.add_grad(st.t, &st.d)?;
                    if n_iter != c.max_iter {
                        let (f, g) = self.evaluate(closure)?;
                        *loss = f;
                        *flat_grad = g;
                        opt_cond = max_abs(flat_grad) <= c.tolerance_grad;
                        ls_func_evals = 1;
                    } else {
                        ls_func_evals = 0;
                    }
                }
            }
            *current_evals += ls_func_evals;
            st.func_evals += ls_func_evals as u64;
            if n_iter == c.max_iter
                || *current_evals >= max_eval
                || opt_cond
                || st.d.iter().fold(0.0f64, |m, d| m.max(p.r(d * st.t).abs())) <= c.tolerance_change
                || (*loss - st.prev_loss).abs() < c.tolerance_change
            {
                break;
            }
        }
        Ok(())
    }

    /// `_strong_wolfe`: returns (loss, gradient, step, evaluations) at the accepted step.
    #[allow(clippy::too_many_arguments)]
    fn strong_wolfe(
        &self,
        closure: &mut dyn FnMut() -> Result<Tensor>,
        x: &[f64],
        mut t: f64,
        d: &[f64],
        f: f64,
        g: &[f64],
        gtd: f64,
        max_ls: usize,
    ) -> Result<(f64, Vec<f64>, f64, usize)> {
        const C1: f64 = 1e-4;
        const C2: f64 = 0.9;
        let tolerance_change = 1e-9;
        let p = self.precision();
        let dot = |a: &[f64], b: &[f64]| p.r(dot(a, b));
        let d_norm = max_abs(d);
        let (mut f_new, mut g_new) = self.directional(closure, x, t, d)?;
        let mut ls_func_evals = 1;
        let mut gtd_new = dot(&g_new, d);
        let (mut t_prev, mut f_prev, mut g_prev, mut gtd_prev) = (0.0, f, g.to_vec(), gtd);
        let mut done = false;
        let mut ls_iter = 0;
        // [t, f, g, gtd] at each end of the bracket.
        let mut bracket: Vec<(f64, f64, Vec<f64>, f64)> = Vec::new();
        while ls_iter < max_ls {
            if f_new > f + C1 * t * gtd || (ls_iter > 1 && f_new >= f_prev) {
                bracket = vec![
                    (t_prev, f_prev, g_prev, gtd_prev),
                    (t, f_new, g_new.clone(), gtd_new),
                ];
                break;
            }
            if gtd_new.abs() <= -C2 * gtd {
                bracket = vec![(t, f_new, g_new.clone(), gtd_new)];
                done = true;
                break;
            }
            if gtd_new >= 0.0 {
                bracket = vec![
                    (t_prev, f_prev, g_prev, gtd_prev),
                    (t, f_new, g_new.clone(), gtd_new),
                ];
                break;
            }
            let min_step = t + 0.01 * (t - t_prev);
            let max_step = t * 10.0;
            let tmp = t;
            t = p.r(cubic_interpolate(
                (t_prev, f_prev, gtd_prev),
                (t, f_new, gtd_new),
                Some((min_step, max_step)),
            ));
            t_prev = tmp;
            f_prev = f_new;
            g_prev = g_new.clone();
            gtd_prev = gtd_new;
            (f_new, g_new) = self.directional(closure, x, t, d)?;
            ls_func_evals += 1;
            gtd_new = dot(&g_new, d);
            ls_iter += 1;
        }
        if ls_iter == max_ls {
            // PyTorch keeps gtd from the last bracket here (it is not reassigned).
            let gtd_keep = |i: usize| bracket.get(i).map(|b| b.3).unwrap_or(f64::NAN);
            bracket = vec![
                (0.0, f, g.to_vec(), gtd_keep(0)),
                (t, f_new, g_new.clone(), gtd_keep(1)),
            ];
        }
        let (mut low, mut high) = if bracket[0].1 <= bracket[bracket.len() - 1].1 {
            (0, 1)
        } else {
            (1, 0)
        };
        let mut insuf_progress = false;
        while !done && ls_iter < max_ls {
            if (bracket[1].0 - bracket[0].0).abs() * d_norm < tolerance_change {
                break;
            }
            t = p.r(cubic_interpolate(
                (bracket[0].0, bracket[0].1, bracket[0].3),
                (bracket[1].0, bracket[1].1, bracket[1].3),
                None,
            ));
            let (bmax, bmin) = (
                bracket[0].0.max(bracket[1].0),
                bracket[0].0.min(bracket[1].0),
            );
            let eps = 0.1 * (bmax - bmin);
            if (bmax - t).min(t - bmin) < eps {
                if insuf_progress || t >= bmax || t <= bmin {
                    t = if (t - bmax).abs() < (t - bmin).abs() {
                        bmax - eps
                    } else {
                        bmin + eps
                    };
                    insuf_progress = false;
                } else {
                    insuf_progress = true;
                }
            } else {
                insuf_progress = false;
            }
            (f_new, g_new) = self.directional(closure, x, t, d)?;
            ls_func_evals += 1;
            gtd_new = dot(&g_new, d);
            ls_iter += 1;
            if f_new > f + C1 * t * gtd || f_new >= bracket[low].1 {
                bracket[high] = (t, f_new, g_new.clone(), gtd_new);
                (low, high) = if bracket[0].1 <= bracket[1].1 {
                    (0, 1)
                } else {
                    (1, 0)
                };
            } else {
                if gtd_new.abs() <= -C2 * gtd {
                    done = true;
                } else if gtd_new * (bracket[high].0 - bracket[low].0) >= 0.0 {
                    bracket[high] = bracket[low].clone();
                }
                bracket[low] = (t, f_new, g_new.clone(), gtd_new);
            }
        }
        let (t, f_new, g_new, _) = bracket.swap_remove(low.min(bracket.len() - 1));
        Ok((f_new, g_new, t, ls_func_evals))
    }

    /// The state as data, under PyTorch's names: `func_evals`, `n_iter`, `t`, `H_diag`,
    /// `prev_loss`, `history` (the number of kept pairs), `ro.{i}`, and the tensors `d`,
    /// `prev_flat_grad`, `old_dirs.{i}`, `old_stps.{i}` (float64, flat over all parameters);
    /// and the learning rate `group.0.lr`, which schedules change.
    pub fn state_dict(&self) -> Result<OptimizerState> {
        AnyOptimizer::state_dict(self)
    }

    /// Restores [`LbfgsOptimizer::state_dict`]'s output, checked in full first: counters
    /// whole and in range, scalars finite, vectors of the parameters' total length and
    /// finite, the history within `history_size`, no unknown entries. Nothing changes when
    /// it fails.
    pub fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()> {
        AnyOptimizer::load_state_dict(self, state)
    }

    /// The state under `prefix`, checked: the new `State` and learning rate.
    fn stage(&self, prefix: &str, state: &StateDict) -> taper_tensor::Result<(State, Option<f64>)> {
        let key = |field: &str| {
            if prefix.is_empty() {
                field.to_string()
            } else {
                format!("{prefix}.{field}")
            }
        };
        let mismatch = |k: String, reason: String| taper_tensor::Error::State { key: k, reason };
        let scalar = |k: &str| state.finite(prefix, k);
        let n = self.numel();
        let vector = |k: &str| -> taper_tensor::Result<Vec<f64>> {
            let t = state.tensor(prefix, k, &[n])?;
            let v = t.to_dtype(DType::F64)?.to_vec1::<f64>()?;
            if v.iter().all(|x| x.is_finite()) {
                Ok(v)
            } else {
                Err(mismatch(key(k), "holds NaN or infinity".into()))
            }
        };
        let func_evals = state.counter(prefix, "func_evals")?;
        let n_iter = state.counter(prefix, "n_iter")?;
        let history = state.counter(prefix, "history")? as usize;
        if history > self.config.history_size {
            return Err(mismatch(
                key("history"),
                format!(
                    "is {history}; expected at most history_size = {}",
                    self.config.history_size
                ),
            ));
        }
        let mut st = State {
            func_evals,
            n_iter,
            t: scalar("t")?,
            h_diag: scalar("H_diag")?,
            prev_loss: scalar("prev_loss")?,
            ..Default::default()
        };
        let mut expected = 6;
        if n_iter > 0 {
            st.d = vector("d")?;
            st.prev_flat_grad = vector("prev_flat_grad")?;
            expected += 2;
        }
        for i in 0..history {
            st.old_dirs.push_back(vector(&format!("old_dirs.{i}"))?);
            st.old_stps.push_back(vector(&format!("old_stps.{i}"))?);
            st.ro.push_back(scalar(&format!("ro.{i}"))?);
            expected += 3;
        }
        // Files written before the rate was saved have none: the configured one stays.
        let lr = match state.scalars.get(&key("group.0.lr")) {
            Some(_) => {
                expected += 1;
                let lr = scalar("group.0.lr")?;
                self.config
                    .lr(lr)
                    .validate()
                    .map_err(|e| mismatch(key("group.0.lr"), e.to_string()))?;
                Some(lr)
            }
            None => None,
        };
        let head = key("");
        let entries = state
            .scalars
            .keys()
            .chain(state.tensors.keys())
            .filter(|k| prefix.is_empty() || k.starts_with(&head))
            .count();
        if entries != expected {
            return Err(mismatch(
                if prefix.is_empty() {
                    "LBFGS".into()
                } else {
                    prefix.to_string()
                },
                format!(
                    "has {entries} entries where LBFGS with this history has {expected} \
                     (unknown or extra entries)"
                ),
            ));
        }
        Ok((st, lr))
    }
}

impl Stateful for LbfgsOptimizer {
    fn save_state(&self, prefix: &str, out: &mut StateDict) -> taper_tensor::Result<()> {
        let st = &self.state;
        let dev = self.params[0].1.device();
        let vec = |v: &[f64]| Tensor::from_slice(v, v.len(), dev);
        out.set_counter(prefix, "func_evals", st.func_evals)?;
        out.set_counter(prefix, "n_iter", st.n_iter)?;
        out.set_counter(prefix, "history", st.old_dirs.len() as u64)?;
        for (k, v) in [
            ("t", st.t),
            ("H_diag", st.h_diag),
            ("prev_loss", st.prev_loss),
        ] {
            out.set_scalar(prefix, k, v);
        }
        out.set_scalar(prefix, "group.0.lr", self.config.lr);
        if st.n_iter > 0 {
            out.set_tensor(prefix, "d", &vec(&st.d)?);
            out.set_tensor(prefix, "prev_flat_grad", &vec(&st.prev_flat_grad)?);
        }
        for (i, ((y, s), ro)) in st.old_dirs.iter().zip(&st.old_stps).zip(&st.ro).enumerate() {
            out.set_tensor(prefix, &format!("old_dirs.{i}"), &vec(y)?);
            out.set_tensor(prefix, &format!("old_stps.{i}"), &vec(s)?);
            out.set_scalar(prefix, &format!("ro.{i}"), *ro);
        }
        Ok(())
    }

    fn check_state(&self, prefix: &str, state: &StateDict) -> taper_tensor::Result<()> {
        self.stage(prefix, state).map(|_| ())
    }

    fn load_state(&mut self, prefix: &str, state: &StateDict) -> taper_tensor::Result<()> {
        let (st, lr) = self.stage(prefix, state)?;
        self.state = st;
        if let Some(lr) = lr {
            self.config.lr = lr;
        }
        Ok(())
    }
}

/// L-BFGS has one group, its configuration's.
impl LrTarget for LbfgsOptimizer {
    fn group_count(&self) -> usize {
        1
    }
    fn group_lr(&self, group: usize) -> Option<f64> {
        (group == 0).then_some(self.config.lr)
    }
    fn set_group_lr(&mut self, group: usize, lr: f64) -> Result<()> {
        if group != 0 {
            return Err(Error::EmptyGroup {
                group: format!("#{group} (LBFGS has 1 group)"),
            });
        }
        self.config.lr(lr).validate()?;
        self.config.lr = lr;
        Ok(())
    }
    fn group_momentum(&self, _group: usize) -> Option<f64> {
        None
    }
    fn set_group_momentum(&mut self, _group: usize, _momentum: f64) -> Result<bool> {
        Ok(false)
    }
}

/// L-BFGS re-evaluates the loss inside a step: it steps through
/// [`AnyOptimizer::step_closure`] only.
impl AnyOptimizer for LbfgsOptimizer {
    fn name(&self) -> String {
        "LBFGS".into()
    }
    fn params(&self) -> Vec<(String, Var)> {
        self.params.clone()
    }
    fn step(&mut self, _grads: &Gradients) -> Result<StepReport> {
        Err(Error::NeedsClosure { optimizer: "LBFGS" })
    }
    fn backward_step(&mut self, _loss: &Tensor) -> Result<StepReport> {
        Err(Error::NeedsClosure { optimizer: "LBFGS" })
    }
    fn needs_closure(&self) -> bool {
        true
    }
    fn step_closure(&mut self, closure: &mut dyn FnMut() -> Result<Tensor>) -> Result<StepReport> {
        self.step_with(closure)?;
        Ok(StepReport {
            updated: self.params.len(),
            ..Default::default()
        })
    }
    fn steps(&self) -> u64 {
        self.state.n_iter
    }
}
