//! The optimizer comparison, shared with the end-to-end tests.

use std::path::PathBuf;

use taper::data::{mnist, Batching, DataLoader};
use taper::nn::{cross_entropy, Activation, Flatten, Linear, Sequential};
use taper::optim::*;
use taper::prelude::*;
use taper::train::plot::{contour_panels, plot_grid, plot_panels, Panel, Series};

/// Settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Steps on each 2-D function.
    pub steps_2d: usize,
    /// Steps on the MNIST MLP.
    pub mnist_steps: usize,
    /// Where the PNGs go.
    pub out: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            steps_2d: 2000,
            mnist_steps: 400,
            out: PathBuf::from("runs/optimizers"),
        }
    }
}

/// (final loss, first step at or below the target) per problem; `None` where the optimizer
/// does not apply (Muon takes matrices, so it has no 2-D runs; L-BFGS is a full-batch method,
/// so it has no mini-batch MNIST run).
#[derive(Debug, Clone)]
pub struct Row {
    /// Optimizer.
    pub name: String,
    /// Rosenbrock from (−1.5, 2).
    pub rosenbrock: Option<(f64, Option<usize>)>,
    /// Beale from (1, 1).
    pub beale: Option<(f64, Option<usize>)>,
    /// MNIST MLP (mean of the last 20 steps' losses).
    pub mnist: Option<(f64, Option<usize>)>,
}

/// The loss at the current parameters, recomputed on demand (L-BFGS calls it several times
/// per step).
type LossFn<'a> = dyn FnMut() -> taper::optim::Result<Tensor> + 'a;

/// One optimizer step given the loss closure: gradient methods evaluate it once.
trait Stepper {
    fn step(&mut self, loss: &mut LossFn<'_>) -> anyhow::Result<()>;
}

/// Any optimizer that steps from gradients (a registered rule, Lookahead).
struct Gradient<O>(O, ParamStore);

impl<O: AnyOptimizer> Stepper for Gradient<O> {
    fn step(&mut self, loss: &mut LossFn<'_>) -> anyhow::Result<()> {
        let l = loss()?;
        self.0.step(&Gradients::compute(&l, &self.1)?)?;
        Ok(())
    }
}

/// L-BFGS: one iteration per step, with the strong-Wolfe line search.
struct Quasi(LbfgsOptimizer);

impl Stepper for Quasi {
    fn step(&mut self, loss: &mut LossFn<'_>) -> anyhow::Result<()> {
        self.0.step_with(loss)?;
        Ok(())
    }
}

/// Muon on the weight matrices and AdamW on the rest, from the same gradients.
struct Split(Optimizer<Muon>, Optimizer<Adam>, ParamStore);

impl Stepper for Split {
    fn step(&mut self, loss: &mut LossFn<'_>) -> anyhow::Result<()> {
        let g = Gradients::compute(&loss()?, &self.2)?;
        self.0.step(&g)?;
        self.1.step(&g)?;
        Ok(())
    }
}

/// Builds an optimizer over a store at a learning rate.
type Make<'a> = dyn Fn(&ParamStore, f64) -> anyhow::Result<Box<dyn Stepper>> + 'a;

/// Builds MNIST's optimizer over a store, at its own rate.
type MakeMnist<'a> = dyn Fn(&ParamStore) -> anyhow::Result<Box<dyn Stepper>> + 'a;

/// A registered rule (or any rule) as a [`Make`].
fn plain<R: Rule>(rule: R) -> impl Fn(&ParamStore, f64) -> anyhow::Result<Box<dyn Stepper>> {
    move |store, lr| {
        let mut rule = rule.clone();
        rule.common_mut().lr = lr;
        let opt = Optimizer::new(rule, store)?;
        Ok(Box::new(Gradient(opt, store.clone())))
    }
}

/// Learning rates tried on the 2-D problems: each optimizer is shown at the rate (from
/// this log grid) that ends lowest, so no optimizer needs a hand-tuned rate here.
const LR_GRID: [f64; 9] = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0];

fn rosenbrock(x: f64, y: f64) -> f64 {
    (1.0 - x).powi(2) + 100.0 * (y - x * x).powi(2)
}

fn beale(x: f64, y: f64) -> f64 {
    (1.5 - x + x * y).powi(2) + (2.25 - x + x * y * y).powi(2) + (2.625 - x + x * y.powi(3)).powi(2)
}

/// The same functions as differentiable tensor expressions of p = (x, y).
fn loss_tensor(problem: &str, p: &Tensor) -> taper::tensor::candle::Result<Tensor> {
    let (x, y) = (p.narrow(0, 0, 1)?, p.narrow(0, 1, 1)?);
    match problem {
        "rosenbrock" => {
            (x.affine(-1.0, 1.0)?.sqr()? + y.sub(&x.sqr()?)?.sqr()?.affine(100.0, 0.0)?)?.sum_all()
        }
        _ => {
            let xy = x.mul(&y)?;
            let t1 = (xy.sub(&x)? + 1.5)?.sqr()?;
            let t2 = (x.mul(&y.sqr()?)?.sub(&x)? + 2.25)?.sqr()?;
            let t3 = (x.mul(&y.powf(3.0)?)?.sub(&x)? + 2.625)?.sqr()?;
            (t1 + t2 + t3)?.sum_all()
        }
    }
}

/// The best run over [`LR_GRID`]: lowest final value, then fewest steps.
fn best_2d(
    name: &str,
    make: &Make<'_>,
    problem: &str,
    start: (f64, f64),
    steps: usize,
) -> anyhow::Result<(Series, f64, Option<usize>)> {
    let mut best: Option<(Series, f64, Option<usize>)> = None;
    for lr in LR_GRID {
        let run = descend_2d(name, make, lr, problem, start, steps)?;
        let key = |r: &(Series, f64, Option<usize>)| {
            let f = if r.1.is_finite() { r.1 } else { f64::INFINITY };
            (f, r.2.unwrap_or(usize::MAX))
        };
        if best.as_ref().is_none_or(|b| key(&run) < key(b)) {
            best = Some((
                Series {
                    name: format!("{name} (lr {lr:.0e})"),
                    points: run.0.points,
                },
                run.1,
                run.2,
            ));
        }
    }
    best.ok_or_else(|| anyhow::anyhow!("empty learning-rate grid"))
}

fn descend_2d(
    name: &str,
    make: &Make<'_>,
    lr: f64,
    problem: &str,
    start: (f64, f64),
    steps: usize,
) -> anyhow::Result<(Series, f64, Option<usize>)> {
    let store = ParamStore::new(&Device::Cpu, DType::F64);
    let p = store.parameter("p", 2, |_, _, d| Ok(Tensor::new(&[start.0, start.1], d)?))?;
    let mut opt = make(&store, lr)?;
    let mut path = vec![start];
    let mut reached = None;
    for t in 0..steps {
        let loss = loss_tensor(problem, &p)?;
        let l = loss.to_scalar::<f64>()?;
        if reached.is_none() && l <= 1e-2 {
            reached = Some(t);
        }
        if !l.is_finite() {
            break;
        }
        let mut first = Some(loss);
        opt.step(&mut || match first.take() {
            Some(l) => Ok(l),
            None => Ok(loss_tensor(problem, &p)?),
        })?;
        let v = p.to_vec1::<f64>()?;
        path.push((v[0], v[1]));
    }
    let last = *path.last().unwrap_or(&start);
    let f = if problem == "rosenbrock" {
        rosenbrock(last.0, last.1)
    } else {
        beale(last.0, last.1)
    };
    Ok((
        Series {
            name: name.into(),
            points: path,
        },
        f,
        reached,
    ))
}

/// The MNIST run, at the registry's rate for this model.
fn mnist_curve(
    name: &str,
    make: &MakeMnist<'_>,
    steps: usize,
) -> anyhow::Result<(Series, f64, Option<usize>)> {
    manual_seed(0); // the same initialization for every optimizer
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let model = Sequential::new(&store)
        .append(Flatten::default())
        .append_with(|s| Linear::new(784, 128, s))?
        .append(Activation::Relu)
        .append_with(|s| Linear::new(128, 10, s))?;
    let mut opt = make(&store)?;
    let loader = DataLoader::new(mnist::builtin()?.train, Batching::MiniBatch(64))?
        .shuffle(true)
        .seed(0);
    let (mut losses, mut reached, mut smooth) = (Vec::new(), None, None::<f64>);
    'outer: for epoch in 0.. {
        for b in loader.epoch(epoch) {
            let b = b?;
            let loss = cross_entropy(&model.forward_t(&b.inputs, true)?, &b.targets)?;
            let l = loss.to_scalar::<f32>()? as f64;
            opt.step(&mut || Ok(loss.clone()))?;
            let s = smooth.map_or(l, |s| 0.9 * s + 0.1 * l);
            smooth = Some(s);
            losses.push(s);
            if reached.is_none() && s <= 0.5 {
                reached = Some(losses.len());
            }
            if losses.len() == steps {
                break 'outer;
            }
        }
    }
    let tail = &losses[losses.len().saturating_sub(20)..];
    let final_loss = tail.iter().sum::<f64>() / tail.len().max(1) as f64;
    Ok((Series::from_values(name, &losses), final_loss, reached))
}

/// Runs the comparison and writes `rosenbrock.png`, `beale.png` and `mnist_loss.png`.
pub fn run(cfg: &Config) -> anyhow::Result<Vec<Row>> {
    std::fs::create_dir_all(&cfg.out)?;
    let mut each = Each {
        cfg,
        rows: Vec::new(),
        ros: Vec::new(),
        bea: Vec::new(),
        mn: Vec::new(),
        err: None,
    };
    visit_optimizers(&mut each);
    if let Some(e) = each.err {
        return Err(e);
    }
    each.extras()?;
    let Each {
        rows, ros, bea, mn, ..
    } = each;
    contour_panels(
        cfg.out.join("rosenbrock.png"),
        "Rosenbrock from (-1.5, 2), minimum (1, 1): start o, minimum x, end ■",
        rosenbrock,
        (-2.0, 2.0),
        (-1.0, 3.0),
        (1.0, 1.0),
        &ros,
        6,
    )?;
    contour_panels(
        cfg.out.join("beale.png"),
        "Beale from (1, 1), minimum (3, 0.5): start o, minimum x, end ■",
        beale,
        (-0.5, 4.0),
        (-1.0, 2.0),
        (3.0, 0.5),
        &bea,
        6,
    )?;
    // Convergence: the function value along each trajectory, on a log axis.
    let along = |runs: &[Series], f: fn(f64, f64) -> f64| -> Vec<Series> {
        runs.iter()
            .map(|s| Series {
                name: s.name.clone(),
                points: s
                    .points
                    .iter()
                    .enumerate()
                    .map(|(t, &(x, y))| (t as f64, f(x, y)))
                    .collect(),
            })
            .collect()
    };
    let convergence = |title: &str, series: Vec<Series>| Panel {
        series,
        ..Panel::new(title, "step", "f(x, y)").log_y().integer_x()
    };
    plot_panels(
        cfg.out.join("convergence.png"),
        1500,
        560,
        &[
            convergence("Rosenbrock", along(&ros, rosenbrock)),
            convergence("Beale", along(&bea, beale)),
        ],
    )?;
    // Small multiples: one family per panel, on one shared y range, and a last panel with
    // the best of each family (lowest final loss) to compare across families.
    let final_of = |s: &Series| {
        let tail = &s.points[s.points.len().saturating_sub(20)..];
        tail.iter().map(|p| p.1).sum::<f64>() / tail.len().max(1) as f64
    };
    let mut panels: Vec<Panel> = PANELS
        .iter()
        .map(|&fam| Panel {
            series: mn
                .iter()
                .filter(|(f, _)| *f == fam)
                .map(|(_, s)| s.clone())
                .collect(),
            ..Panel::new(fam, "step", "training loss").log_y().integer_x()
        })
        .collect();
    let best: Vec<Series> = panels
        .iter()
        .filter_map(|p| {
            p.series
                .iter()
                .min_by(|a, b| final_of(a).total_cmp(&final_of(b)))
                .cloned()
        })
        .collect();
    panels.push(Panel {
        series: best,
        ..Panel::new("Best of each family", "step", "training loss")
            .log_y()
            .integer_x()
    });
    let (lo, hi) = mn
        .iter()
        .flat_map(|(_, s)| s.points.iter().map(|p| p.1))
        .filter(|y| *y > 0.0 && y.is_finite())
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), y| {
            (lo.min(y), hi.max(y))
        });
    for p in &mut panels {
        p.y_range = Some((lo, hi));
    }
    plot_grid(cfg.out.join("mnist_loss.png"), 1800, 900, 3, &panels)?;
    Ok(rows)
}

/// Runs every registered optimizer on the three problems.
struct Each<'a> {
    cfg: &'a Config,
    rows: Vec<Row>,
    ros: Vec<Series>,
    bea: Vec<Series>,
    /// Each MNIST curve with the panel (family) it is drawn in.
    mn: Vec<(&'static str, Series)>,
    err: Option<anyhow::Error>,
}

/// The panel of the optimizers that are not one registered rule.
const WRAPPED: &str = "Lookahead, Muon + AdamW";

/// The MNIST figure's panels, in order: one family of optimizers each (sign and relative
/// steps: Lion, Rprop, LAMB, LARS, Adafactor), so that no panel
/// holds more lines than an eye can follow.
const PANELS: [&str; 5] = [
    "Gradient descent and momentum",
    "Adam family",
    "AdaGrad, RMSProp, Adadelta",
    "Sign and relative steps",
    WRAPPED,
];

/// The panel a registered configuration's curve goes in.
fn family_panel(entry: &Entry) -> &'static str {
    match entry.family {
        Family::Descent => PANELS[0],
        Family::Adaptive if entry.key.contains("adam") || entry.key == "amsgrad" => PANELS[1],
        Family::Adaptive => PANELS[2],
        Family::Sign | Family::Layerwise => PANELS[3],
    }
}

impl Each<'_> {
    /// One optimizer on the problems it applies to (`None` skips one).
    fn one(
        &mut self,
        name: &str,
        family: &'static str,
        on_2d: Option<&Make<'_>>,
        on_mnist: Option<&MakeMnist<'_>>,
    ) -> anyhow::Result<()> {
        let steps = self.cfg.steps_2d;
        let mut row = Row {
            name: name.into(),
            rosenbrock: None,
            beale: None,
            mnist: None,
        };
        if let Some(make) = on_2d {
            let (rs, rf, rr) = best_2d(name, make, "rosenbrock", (-1.5, 2.0), steps)?;
            let (bs, bf, br) = best_2d(name, make, "beale", (1.0, 1.0), steps)?;
            row.rosenbrock = Some((rf, rr));
            row.beale = Some((bf, br));
            self.ros.push(rs);
            self.bea.push(bs);
        }
        if let Some(make) = on_mnist {
            let (ms, mf, mr) = mnist_curve(name, make, self.cfg.mnist_steps)?;
            row.mnist = Some((mf, mr));
            self.mn.push((family, ms));
        }
        self.rows.push(row);
        Ok(())
    }

    /// The optimizers outside the registry of rules: Lookahead around Adam, L-BFGS (2-D
    /// only: a full-batch method) and Muon with AdamW (MNIST only: Muon takes matrices).
    fn extras(&mut self) -> anyhow::Result<()> {
        let lookahead = |store: &ParamStore, lr: f64| -> anyhow::Result<Box<dyn Stepper>> {
            let inner = Optimizer::new(Adam::new(lr), store)?;
            Ok(Box::new(Gradient(
                Lookahead::new(inner, 5, 0.5)?,
                store.clone(),
            )))
        };
        self.one(
            "lookahead-adam",
            WRAPPED,
            Some(&lookahead),
            Some(&|s: &ParamStore| lookahead(s, 2e-3)),
        )?;
        let lbfgs = |store: &ParamStore, lr: f64| -> anyhow::Result<Box<dyn Stepper>> {
            let config = Lbfgs::new(lr)
                .line_search(LineSearch::StrongWolfe)
                .max_iter(1)
                .max_eval(25);
            Ok(Box::new(Quasi(LbfgsOptimizer::new(config, store)?)))
        };
        self.one("lbfgs-wolfe", WRAPPED, Some(&lbfgs), None)?;
        let muon = |store: &ParamStore| -> anyhow::Result<Box<dyn Stepper>> {
            let (matrices, rest): (Vec<_>, Vec<_>) = store
                .trainable()
                .into_iter()
                .partition(|(_, v)| v.rank() == 2);
            Ok(Box::new(Split(
                Optimizer::from_vars(Muon::new(0.02), matrices)?,
                Optimizer::from_vars(Adam::adamw(2e-3), rest)?,
                store.clone(),
            )))
        };
        self.one("muon+adamw", WRAPPED, None, Some(&muon))
    }
}

impl Visitor for Each<'_> {
    fn visit<R: Rule>(&mut self, entry: &Entry, rule: R) {
        if self.err.is_none() {
            let registry_rate = rule.common().lr;
            let make = plain(rule);
            let mnist = |s: &ParamStore| make(s, registry_rate);
            if let Err(e) = self.one(entry.key, family_panel(entry), Some(&make), Some(&mnist)) {
                self.err = Some(e.context(entry.key));
            }
        }
    }
}
