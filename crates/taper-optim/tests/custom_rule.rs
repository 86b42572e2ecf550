//! A rule written outside the crate, as a user would: named state through `slots!`, the
//! fused loop's state limit made visible, and a mislisted slot refused when the optimizer
//! is built.

use taper_optim::*;
use taper_tensor::{DType, Device, Gradients, ParamStore, Tensor};

slots! {
    /// Four running averages of g at different rates.
    pub enum FourSlot {
        /// Rate 0.5.
        A = "a",
        /// Rate 0.6.
        B = "b",
        /// Rate 0.7.
        C = "c",
        /// Rate 0.8.
        D = "d",
    }
}

/// Steps along the mean of four running averages of g; `used` of them are kept.
#[derive(Debug, Clone, Copy)]
struct Four {
    common: SharedOptions,
    used: usize,
    /// Lists its slots out of storage order, to check that the optimizer refuses it.
    mislisted: bool,
}

impl Rule for Four {
    const NAME: &'static str = "Four";
    type Step = f64;
    type Slot = FourSlot;
    type Scalar = NoSlot;

    fn common(&self) -> &SharedOptions {
        &self.common
    }
    fn common_mut(&mut self) -> &mut SharedOptions {
        &mut self.common
    }
    fn validate(&self) -> Result<()> {
        Ok(())
    }
    fn slots(&self) -> &'static [FourSlot] {
        use FourSlot::*;
        if self.mislisted {
            return &[B, A];
        }
        [&[A, B, C][..], &[A, B, C, D]][self.used - 3]
    }
    fn prepare(&self, _: u64, _: &mut Slots<'_, f64, NoSlot>) -> f64 {
        self.common.lr / self.used as f64
    }
    fn direction<L: Lane>(
        &self,
        lr: &f64,
        g: &L,
        state: &mut Slots<'_, L, FourSlot>,
    ) -> std::result::Result<L, L::Err> {
        use FourSlot::*;
        state[A] = state[A].ema(g, 0.5)?;
        state[B] = state[B].ema(g, 0.6)?;
        state[C] = state[C].ema(g, 0.7)?;
        let mut sum = state[A].add(&state[B])?.add(&state[C])?;
        if self.used == 4 {
            state[D] = state[D].ema(g, 0.8)?;
            sum = sum.add(&state[D])?;
        }
        sum.scale(*lr)
    }
}

fn store() -> ParamStore {
    let s = ParamStore::new(&Device::Cpu, DType::F32);
    s.parameter("w", 37, |sh, dt, d| Ok(Tensor::ones(sh, dt, d)?))
        .unwrap();
    s
}

fn run(rule: Four, path: UpdatePath) -> (Vec<f32>, Optimizer<Four>) {
    let s = store();
    let mut opt = Optimizer::new(rule, &s).unwrap().update_path(path);
    for k in 0..5 {
        let mut g = Gradients::default();
        let v: Vec<f32> = (0..37).map(|i| ((i * 7 + k) % 11) as f32 - 5.0).collect();
        g.insert("w", Tensor::new(v, &Device::Cpu).unwrap());
        opt.step(&g).unwrap();
    }
    let w = s.var("w").unwrap().as_tensor().to_vec1().unwrap();
    (w, opt)
}

#[test]
fn a_rule_over_the_fused_state_limit_says_so_and_still_trains() {
    let four = Four {
        common: SharedOptions::new(0.1),
        used: 4,
        mislisted: false,
    };
    assert!(four.slots().len() > MAX_FUSED_STATE);
    let (auto, opt) = run(four, UpdatePath::Auto);
    let why = format!(
        "default: tensor ops: Four keeps 4 state tensors, more than the fused loop's \
         MAX_FUSED_STATE = {MAX_FUSED_STATE}"
    );
    assert_eq!(opt.execution(), std::slice::from_ref(&why));
    assert!(format!("{opt:?}").contains(&why));
    let (generic, _) = run(four, UpdatePath::Generic);
    assert_eq!(auto, generic);
    assert_eq!(
        opt.state_dict()
            .unwrap()
            .tensors
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        ["w.a", "w.b", "w.c", "w.d"]
    );

    // Three slots fit: the fused loop runs, and agrees with tensor ops.
    let three = Four { used: 3, ..four };
    let (fused, opt) = run(three, UpdatePath::Auto);
    assert_eq!(
        opt.execution(),
        ["default: fused CPU loop (3 state tensors)"]
    );
    let (generic, _) = run(three, UpdatePath::Generic);
    for (&a, &b) in fused.iter().zip(&generic) {
        let (a, b): (f32, f32) = (a, b);
        assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} vs {b}");
    }
}

#[test]
fn a_slot_listed_out_of_storage_order_is_refused_by_name() {
    let bad = Four {
        common: SharedOptions::new(0.1),
        used: 3,
        mislisted: true,
    };
    let err = Optimizer::new(bad, &store()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Four: state slot `b` is listed at position 0 but stored at 1 \
         (list each present slot once, in storage order)"
    );
}
