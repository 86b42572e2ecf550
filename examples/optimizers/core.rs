//! The optimizer comparison, shared with the end-to-end tests.

use std::path::PathBuf;

use taper::data::{mnist, Batching, DataLoader};
use taper::nn::{cross_entropy, Activation, Flatten, Linear, Sequential};
use taper::optim::*;
use taper::prelude::*;
use taper::train::plot::{contour_with_paths, plot_panels, Panel, Series};

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

/// (final loss, first step at or below the target) per problem.
#[derive(Debug, Clone)]
pub struct Row {
    /// Optimizer.
    pub name: String,
    /// Rosenbrock from (−1.5, 2).
    pub rosenbrock: (f64, Option<usize>),
    /// Beale from (1, 1).
    pub beale: (f64, Option<usize>),
    /// MNIST MLP (mean of the last 20 steps' losses).
    pub mnist: (f64, Option<usize>),
}

const NAMES: [&str; 12] = [
    "GD",
    "momentum (PyTorch)",
    "momentum (documents)",
    "Nesterov",
    "AdaGrad (documents)",
    "RMSProp (documents)",
    "Adam",
    "AdamW",
    "Adamax",
    "NAdam",
    "RAdam",
    "Lion",
];

/// Builds optimizer `name` for `store`; `scale` adapts the rates to the problem.
fn make(name: &str, store: &ParamStore, problem: &str) -> anyhow::Result<Box<dyn AnyOptimizer>> {
    // Plain descents need small steps on Rosenbrock's steep valley; adaptive ones do not.
    let sgd_lr = match problem {
        "rosenbrock" => 1e-3,
        "beale" => 1e-2,
        _ => 0.1,
    };
    let ada_lr = if problem == "mnist" { 2e-3 } else { 0.05 };
    let c = |m| Momentum::Classic {
        momentum: m,
        dampening: 0.0,
    };
    Ok(match name {
        "GD" => Box::new(Optimizer::new(Sgd::new(sgd_lr), store)?),
        "momentum (PyTorch)" => Box::new(Optimizer::new(
            Sgd::new(sgd_lr / 10.0).with_momentum(c(0.9)),
            store,
        )?),
        "momentum (documents)" => Box::new(Optimizer::new(
            Sgd::new(sgd_lr).with_momentum(Momentum::Ema { beta: 0.9 }),
            store,
        )?),
        "Nesterov" => Box::new(Optimizer::new(
            Sgd::new(sgd_lr / 10.0).with_momentum(Momentum::Nesterov { momentum: 0.9 }),
            store,
        )?),
        "AdaGrad (documents)" => Box::new(Optimizer::new(
            Adagrad::documents(if problem == "mnist" { 0.02 } else { 0.5 }, 1e-8),
            store,
        )?),
        "RMSProp (documents)" => Box::new(Optimizer::new(
            RmsProp::documents(ada_lr / 2.0, 0.9, 1e-8),
            store,
        )?),
        "Adam" => Box::new(Optimizer::new(Adam::new(ada_lr), store)?),
        "AdamW" => Box::new(Optimizer::new(Adam::adamw(ada_lr), store)?),
        "Adamax" => Box::new(Optimizer::new(Adamax::new(ada_lr), store)?),
        "NAdam" => Box::new(Optimizer::new(NAdam::new(ada_lr), store)?),
        // RAdam's first steps are un-rectified momentum SGD: SGD's rate on the 2-D problems.
        "RAdam" => Box::new(Optimizer::new(
            RAdam::new(if problem == "mnist" { ada_lr } else { sgd_lr }),
            store,
        )?),
        "Lion" => Box::new(Optimizer::new(Lion::new(ada_lr / 5.0), store)?),
        other => anyhow::bail!("unknown optimizer {other}"),
    })
}

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

fn descend_2d(
    name: &str,
    problem: &str,
    start: (f64, f64),
    steps: usize,
) -> anyhow::Result<(Series, f64, Option<usize>)> {
    let store = ParamStore::new(&Device::Cpu, DType::F64);
    let p = store.parameter("p", 2, |_, _, d| Ok(Tensor::new(&[start.0, start.1], d)?))?;
    let mut opt = make(name, &store, problem)?;
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
        opt.step(&Gradients::compute(&loss, &store)?)?;
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

fn mnist_curve(name: &str, steps: usize) -> anyhow::Result<(Series, f64, Option<usize>)> {
    manual_seed(0); // the same initialization for every optimizer
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let model = Sequential::new(&store)
        .append(Flatten::default())
        .append_with(|s| Linear::new(784, 128, s))?
        .append(Activation::Relu)
        .append_with(|s| Linear::new(128, 10, s))?;
    let mut opt = make(name, &store, "mnist")?;
    let loader = DataLoader::new(mnist::builtin()?.train, Batching::MiniBatch(64))?
        .shuffle(true)
        .seed(0);
    let (mut losses, mut reached, mut smooth) = (Vec::new(), None, None::<f64>);
    'outer: for epoch in 0.. {
        for b in loader.epoch(epoch) {
            let b = b?;
            let loss = cross_entropy(&model.forward_t(&b.inputs, true)?, &b.targets)?;
            let l = loss.to_scalar::<f32>()? as f64;
            opt.step(&Gradients::compute(&loss, &store)?)?;
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
    let (mut rows, mut ros, mut bea, mut mn) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for name in NAMES {
        let (rs, rf, rr) = descend_2d(name, "rosenbrock", (-1.5, 2.0), cfg.steps_2d)?;
        let (bs, bf, br) = descend_2d(name, "beale", (1.0, 1.0), cfg.steps_2d)?;
        let (ms, mf, mr) = mnist_curve(name, cfg.mnist_steps)?;
        rows.push(Row {
            name: name.into(),
            rosenbrock: (rf, rr),
            beale: (bf, br),
            mnist: (mf, mr),
        });
        ros.push(rs);
        bea.push(bs);
        mn.push(ms);
    }
    contour_with_paths(
        cfg.out.join("rosenbrock.png"),
        "Rosenbrock from (-1.5, 2): minimum at (1, 1)",
        rosenbrock,
        (-2.0, 2.0),
        (-1.0, 3.0),
        &ros,
    )?;
    contour_with_paths(
        cfg.out.join("beale.png"),
        "Beale from (1, 1): minimum at (3, 0.5)",
        beale,
        (-0.5, 4.0),
        (-1.0, 2.0),
        &bea,
    )?;
    let panel = Panel {
        title: "MNIST MLP 784-128-10, batch 64 (smoothed)".into(),
        x_label: "step".into(),
        y_label: "training loss".into(),
        log_y: true,
        series: mn,
    };
    plot_panels(cfg.out.join("mnist_loss.png"), 1000, 600, &[panel])?;
    Ok(rows)
}
