//! Layer behaviour: PyTorch naming, shape errors, dropout and batch-norm modes,
//! default-initialization statistics, numerically extreme losses, penalties.

use taper_nn::init::{calculate_gain, FanMode, Init, Nonlinearity};
use taper_nn::*;
use taper_tensor::{manual_seed, DType, Device, Gradients, Module, ModuleT, ParamStore, Tensor};

fn store() -> ParamStore {
    ParamStore::new(&Device::Cpu, DType::F32)
}

#[test]
fn mlp_has_pytorch_names_and_shapes() -> anyhow::Result<()> {
    let s = store();
    let _model = Sequential::new(&s)
        .append_with(|s| Linear::new(784, 256, s))?
        .append(Activation::Relu)
        .append_with(|s| Linear::new(256, 10, s))?;
    let got: Vec<(String, Vec<usize>)> = s
        .state_dict()
        .into_iter()
        .map(|(n, t)| (n, t.dims().to_vec()))
        .collect();
    let want = [
        ("0.weight", vec![256, 784]),
        ("0.bias", vec![256]),
        ("2.weight", vec![10, 256]),
        ("2.bias", vec![10]),
    ];
    assert_eq!(got, want.map(|(n, d)| (n.to_string(), d)));
    Ok(())
}

fn err_text<T: std::fmt::Debug>(r: candle_core::Result<T>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn wrong_input_shapes_name_the_layer_and_both_shapes() -> anyhow::Result<()> {
    let s = store();
    let x = Tensor::zeros((8, 100), DType::F32, &Device::Cpu)?;
    let e = err_text(Linear::new(784, 256, &s.sub("fc"))?.forward(&x));
    assert!(
        e.contains("Linear(784 -> 256)") && e.contains("(*, 784)") && e.contains("[8, 100]"),
        "{e}"
    );
    let e = err_text(Conv2d::new(1, 4, (3, 3), &s.sub("c"))?.forward(&x));
    assert!(
        e.contains("Conv2d(1 -> 4") && e.contains("(N, 1, H, W)") && e.contains("[8, 100]"),
        "{e}"
    );
    let e = err_text(BatchNorm::new_2d(3, &s.sub("bn"))?.forward_t(&x, true));
    assert!(
        e.contains("BatchNorm2d(3)") && e.contains("(N, 3, H, W)"),
        "{e}"
    );
    let e = err_text(BatchNorm::new_1d(3, &s.sub("bn1"))?.forward_t(&x, true));
    assert!(
        e.contains("BatchNorm1d(3)") && e.contains("(N, 3) or (N, 3, L)"),
        "{e}"
    );
    // An infinite eps would normalize everything to the bias: refused when built.
    for eps in [f64::INFINITY, f64::NAN, 0.0] {
        let e = taper_nn::BatchNormConfig::new_1d(3)
            .eps(eps)
            .build(&s.sub("bn_eps"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("eps"), "eps = {eps}: {e}");
    }
    let e = err_text(LayerNorm::new(&[64], &s.sub("ln"))?.forward(&x));
    assert!(
        e.contains("LayerNorm([64])") && e.contains("[8, 100]"),
        "{e}"
    );
    let e = err_text(MaxPool2d::new(2).forward(&x));
    assert!(e.contains("MaxPool2d") && e.contains("[8, 100]"), "{e}");
    let emb = Embedding::new(10, 4, &s.sub("emb"))?;
    let e = err_text(emb.forward(&Tensor::new(&[3u32, 10], &Device::Cpu)?));
    assert!(
        e.contains("Embedding(10, 4)") && e.contains("3..=10"),
        "{e}"
    );
    let e = err_text(emb.forward(&x));
    assert!(e.contains("integer ids"), "{e}");
    // BatchNorm refuses one value per channel in training, as PyTorch does.
    let one = Tensor::zeros((1, 3), DType::F32, &Device::Cpu)?;
    let e = err_text(BatchNorm::new_1d(3, &s.sub("bn3"))?.forward_t(&one, true));
    assert!(e.contains("more than 1 value per channel"), "{e}");
    // Losses.
    let e = mse_loss(&x, &x.narrow(1, 0, 5)?, Reduction::Mean)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mse_loss") && e.contains("[8, 5]") && e.contains("[8, 100]"),
        "{e}"
    );
    let bad = Tensor::new(&[0i64, 7], &Device::Cpu)?;
    let e = cross_entropy(&Tensor::zeros((2, 3), DType::F32, &Device::Cpu)?, &bad)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`target`") && e.contains("7 at position 1"),
        "{e}"
    );
    Ok(())
}

#[test]
fn invalid_hyperparameters_are_rejected_by_name() -> anyhow::Result<()> {
    let s = store();
    for (e, field) in [
        (Dropout::new(1.5).unwrap_err(), "`p`"),
        (
            BatchNormConfig::new_1d(3)
                .momentum(2.0)
                .build(&s)
                .unwrap_err(),
            "`momentum`",
        ),
        (
            LayerNormConfig::new(&[3])
                .eps(0.0)
                .elementwise_affine(true)
                .build(&s)
                .unwrap_err(),
            "`eps`",
        ),
        (
            Conv2dConfig::new(3, 4, (3, 3))
                .groups(2)
                .build(&s)
                .unwrap_err(),
            "`groups`",
        ),
    ] {
        assert!(e.to_string().contains(field), "{e}");
    }
    let x = Tensor::zeros((2, 3), DType::F32, &Device::Cpu)?;
    let ce = CrossEntropyLoss {
        label_smoothing: 1.5,
        ..CrossEntropyLoss::new()
    };
    let e = ce.forward(&x, Target::Probs(&x)).unwrap_err();
    assert!(e.to_string().contains("`label_smoothing`"), "{e}");
    Ok(())
}

#[test]
fn dropout_train_and_eval() -> anyhow::Result<()> {
    let d = Dropout::new(0.25)?;
    let x = Tensor::ones((200, 500), DType::F32, &Device::Cpu)?;
    assert_eq!(
        d.forward_t(&x, false)?.to_vec2::<f32>()?,
        x.to_vec2::<f32>()?,
        "eval is the identity"
    );
    manual_seed(5);
    let y = d.forward_t(&x, true)?;
    let v = y.flatten_all()?.to_vec1::<f32>()?;
    let zeros = v.iter().filter(|&&a| a == 0.0).count() as f64 / v.len() as f64;
    assert!((zeros - 0.25).abs() < 0.005, "dropped fraction {zeros}");
    assert!(
        v.iter().all(|&a| a == 0.0 || (a - 1.0 / 0.75).abs() < 1e-6),
        "survivors scaled by 1/(1-p)"
    );
    let mean = v.iter().sum::<f32>() / v.len() as f32;
    assert!((mean - 1.0).abs() < 0.01, "expectation preserved: {mean}");
    manual_seed(5);
    assert_eq!(
        d.forward_t(&x, true)?.flatten_all()?.to_vec1::<f32>()?,
        v,
        "seeded masks repeat"
    );
    assert_eq!(
        Dropout::new(1.0)?
            .forward_t(&x, true)?
            .sum_all()?
            .to_scalar::<f32>()?,
        0.0
    );
    Ok(())
}

#[test]
fn batch_norm_buffers_are_not_trainable_and_eval_uses_them() -> anyhow::Result<()> {
    let s = store();
    let bn = BatchNorm::new_1d(2, &s)?;
    assert_eq!(s.trainable().len(), 2);
    assert_eq!(
        s.buffers()
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["running_mean", "running_var", "num_batches_tracked"]
    );
    let x = Tensor::new(&[[1f32, 10.], [3., 20.], [5., 60.]], &Device::Cpu)?;
    bn.forward_t(&x, true)?;
    bn.forward_t(&x, true)?;
    // mean (3, 30), unbiased var (4, 700); two updates with momentum 0.1 from (0, 1):
    // m = 0.19·batch, v = 0.81 + 0.19·batch.
    let rm = bn.running_mean().to_vec1::<f32>()?;
    let rv = bn.running_var().to_vec1::<f32>()?;
    assert!(
        (rm[0] - 0.57).abs() < 1e-5 && (rm[1] - 5.7).abs() < 1e-4,
        "{rm:?}"
    );
    assert!(
        (rv[0] - (0.81 + 0.76)).abs() < 1e-5 && (rv[1] - (0.81 + 133.0)).abs() < 1e-3,
        "{rv:?}"
    );
    assert_eq!(bn.num_batches_tracked()?, 2);
    // Eval normalizes with the running statistics, and does not update them.
    let y = bn.forward_t(&x, false)?.to_vec2::<f32>()?;
    let expect = (1.0 - 0.57) / (1.57f32 + 1e-5).sqrt();
    assert!((y[0][0] - expect).abs() < 1e-5, "{} vs {expect}", y[0][0]);
    assert_eq!(bn.num_batches_tracked()?, 2);
    Ok(())
}

fn stats(t: &Tensor) -> (f64, f64, f64) {
    let v: Vec<f64> = t
        .flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap();
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    let max = v.iter().fold(0f64, |m, x| m.max(x.abs()));
    (mean, std, max)
}

#[test]
fn default_initialization_statistics() -> anyhow::Result<()> {
    manual_seed(0);
    let s = store();
    let fc = Linear::new(1000, 500, &s)?;
    let bound = 1.0 / 1000f64.sqrt();
    let (mean, std, max) = stats(fc.weight());
    assert!(
        max <= bound && max > 0.99 * bound,
        "weight within U(±1/√fan_in): {max}"
    );
    assert!(mean.abs() < 1e-3 * 10.0 * bound, "{mean}");
    assert!(
        (std / (bound / 3f64.sqrt()) - 1.0).abs() < 0.01,
        "uniform std: {std}"
    );
    let (_, _, bmax) = stats(fc.bias().unwrap());
    assert!(bmax <= bound && bmax > 0.9 * bound);
    let conv = Conv2d::new(16, 32, (5, 5), &s.sub("conv"))?;
    let cb = 1.0 / (16.0 * 25.0f64).sqrt();
    assert!(stats(&s.var("conv.weight")?.as_tensor().clone()).2 <= cb);
    assert!(stats(&s.var("conv.bias")?.as_tensor().clone()).2 <= cb);
    let _ = conv;
    // The other schemes, over (400, 600).
    let (fi, fo) = (600.0f64, 400.0f64);
    let cases = [
        (Init::XavierUniform { gain: 1.0 }, (2.0 / (fi + fo)).sqrt()),
        (
            Init::XavierNormal { gain: 2.0 },
            2.0 * (2.0 / (fi + fo)).sqrt(),
        ),
        (
            Init::KaimingUniform {
                nonlinearity: Nonlinearity::Relu,
                mode: FanMode::FanIn,
            },
            (2.0 / fi).sqrt(),
        ),
        (
            Init::KaimingNormal {
                nonlinearity: Nonlinearity::Relu,
                mode: FanMode::FanOut,
            },
            (2.0 / fo).sqrt(),
        ),
        (
            Init::Normal {
                mean: 0.0,
                std: 0.02,
            },
            0.02,
        ),
        (
            Init::Uniform {
                low: -0.5,
                high: 0.5,
            },
            1.0 / 12f64.sqrt(),
        ),
    ];
    for (init, want_std) in cases {
        let (mean, std, _) = stats(&init.tensor((400, 600), DType::F32, &Device::Cpu)?);
        assert!(
            (std / want_std - 1.0).abs() < 0.01,
            "{init:?}: std {std} vs {want_std}"
        );
        assert!(mean.abs() < 0.01 * want_std * 3.0, "{init:?}: mean {mean}");
    }
    assert_eq!(
        stats(&Init::Constant(0.3).tensor(5, DType::F32, &Device::Cpu)?).0 as f32,
        0.3
    );
    assert_eq!(calculate_gain(Nonlinearity::Tanh), 5.0 / 3.0);
    assert!(
        (calculate_gain(Nonlinearity::LeakyRelu(5f64.sqrt())) - (1.0f64 / 3.0).sqrt()).abs()
            < 1e-15
    );
    assert!(
        Init::XavierUniform { gain: 1.0 }
            .tensor(5, DType::F32, &Device::Cpu)
            .is_err(),
        "fans need 2-D"
    );
    Ok(())
}

#[test]
fn cross_entropy_is_stable_for_huge_logits() -> anyhow::Result<()> {
    let s = store();
    let w = s.parameter("logits", (2, 3), |_, _, d| {
        Ok(Tensor::new(&[[1e4f32, -1e4, 0.], [-1e4, 1e4, 5.]], d)?)
    })?;
    let t = Tensor::new(&[1u32, 0], &Device::Cpu)?;
    let loss = cross_entropy(&w, &t)?;
    let l = loss.to_scalar::<f32>()?;
    assert!(l.is_finite() && (l - 2e4).abs() < 1.0, "{l}");
    let g = Gradients::compute(&loss, &s)?;
    g.check_finite()?;
    let bce = binary_cross_entropy_with_logits(&w, &w.ones_like()?, None, None, Reduction::Sum)?;
    assert!(bce.to_scalar::<f32>()?.is_finite());
    Gradients::compute(&bce, &s)?.check_finite()?;
    Ok(())
}

#[test]
fn penalties_match_hand_computed_values() -> anyhow::Result<()> {
    let s = store();
    s.parameter("0.weight", (1, 2), |_, _, d| {
        Ok(Tensor::new(&[[3f32, -4.]], d)?)
    })?;
    s.parameter("0.bias", 1, |_, _, d| Ok(Tensor::new(&[2f32], d)?))?;
    s.parameter("1.weight", (1, 1), |_, _, d| {
        Ok(Tensor::new(&[[10f32]], d)?)
    })?;
    use regularization::*;
    assert_eq!(l1_penalty(&s, all)?.to_scalar::<f32>()?, 19.0);
    assert_eq!(l2_penalty(&s, all)?.to_scalar::<f32>()?, 129.0);
    assert_eq!(l2_penalty(&s, weights_only)?.to_scalar::<f32>()?, 125.0);
    assert_eq!(
        l1_penalty(&s, |n: &str, _: &Tensor| n.starts_with("0."))?.to_scalar::<f32>()?,
        9.0
    );
    s.freeze("1")?;
    assert_eq!(
        l2_penalty(&s, weights_only)?.to_scalar::<f32>()?,
        25.0,
        "frozen parameters are not penalized"
    );
    Ok(())
}

#[test]
fn no_grad_builds_no_graph_through_taper_layers() -> anyhow::Result<()> {
    let s = store();
    let model = Sequential::new(&s)
        .append_with(|s| Linear::new(3, 2, s))?
        .append(Activation::Tanh);
    let x = Tensor::ones((1, 3), DType::F32, &Device::Cpu)?;
    assert!(model.forward_t(&x, false)?.track_op());
    assert!(!taper_tensor::no_grad(|| model.forward_t(&x, false))?.track_op());
    Ok(())
}

#[test]
fn a_one_dimensional_linear_input_works_in_training_and_evaluation() -> anyhow::Result<()> {
    manual_seed(2);
    let s = store();
    let fc = Linear::new(4, 3, &s)?;
    let x = Tensor::new(&[0.5f32, -1.0, 2.0, 0.25], &Device::Cpu)?;
    let train = fc.forward(&x)?;
    let eval = taper_tensor::no_grad(|| fc.forward(&x))?;
    assert_eq!((train.dims(), eval.dims()), (&[3][..], &[3][..]));
    let diff = (train - eval)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(diff < 1e-6, "{diff}");
    Ok(())
}

#[test]
fn batch_norm_on_an_integer_batch_is_an_error_naming_the_dtype() -> anyhow::Result<()> {
    let s = store();
    let bn = BatchNorm::new_1d(3, &s)?;
    let x = Tensor::zeros((4, 3), DType::U8, &Device::Cpu)?;
    for train in [true, false] {
        let e = bn.forward_t(&x, train).unwrap_err().to_string();
        assert!(e.contains("BatchNorm1d(3)") && e.contains("U8"), "{e}");
    }
    Ok(())
}

/// Float class targets are named by their dtype, not reported as a shape mismatch.
#[test]
fn float_class_targets_name_their_dtype() {
    let dev = &taper_tensor::Device::Cpu;
    let logits = taper_tensor::Tensor::zeros((4, 3), taper_tensor::DType::F32, dev).unwrap();
    let targets = taper_tensor::Tensor::new(&[0f32, 1., 2., 1.], dev).unwrap();
    let err = taper_nn::cross_entropy(&logits, &targets)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("expected integer class targets (u8, u32 or i64)")
            && err.contains("got F32 of shape [4]"),
        "{err}"
    );
}

/// Keras-style summary of a CNN: output shapes through conv, pool and flatten, parameter
/// counts per layer, frozen parameters counted as non-trainable, buffers not counted.
#[test]
fn summary_lists_output_shapes_and_counts() {
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let model = Sequential::new(&store)
        .append_with(|s| Conv2d::new(1, 4, (3, 3), s))
        .unwrap()
        .append_with(|s| BatchNorm::new_2d(4, s))
        .unwrap()
        .append(MaxPool2d::new(2))
        .append(Flatten::default())
        .append_with(|s| Linear::new(4 * 13 * 13, 10, s))
        .unwrap();
    store.freeze("0.weight").unwrap();
    let s = model.summary(&[1, 28, 28]).unwrap();
    let line = |p: &str| s.lines().find(|l| l.starts_with(p)).unwrap().to_string();
    assert!(
        line(" 0 (Conv2d)").contains("(None, 4, 26, 26)") && line(" 0 (Conv2d)").ends_with(" 40"),
        "{s}"
    );
    // Keras counts BatchNorm's moving statistics: 4 scales, 4 shifts, 4 means, 4 variances.
    assert!(line(" 1 (BatchNorm)").ends_with(" 16"), "{s}");
    assert!(line(" 2 (MaxPool2d)").contains("(None, 4, 13, 13)"), "{s}");
    assert!(
        line(" 4 (Linear)").contains("(None, 10)") && line(" 4 (Linear)").ends_with("6,770"),
        "{s}"
    );
    assert!(
        s.contains(
            "Total params: 6,826\nTrainable params: 6,782\nNon-trainable params: 44\n  \
             of which buffers (running statistics): 8"
        ),
        "{s}"
    );
}

/// Issue: two layers built on the same store view silently shared their weights (3 layers,
/// 20 parameters). Now the second layer is an error that says to give it its own prefix.
#[test]
fn two_layers_on_one_store_view_are_an_error_not_shared_weights() {
    let st = ParamStore::new(&Device::Cpu, DType::F32);
    let first = Linear::new(4, 4, &st).unwrap();
    let e = Linear::new(4, 4, &st).unwrap_err().to_string();
    assert!(e.contains("`weight`") && e.contains("store.sub("), "{e}");
    // The same in a custom struct whose fields share a view; a different shape used to
    // say only "shape mismatch for weight: expected [2, 8], got [8, 4]".
    let e = Linear::new(8, 2, &st).unwrap_err().to_string();
    assert!(
        e.contains("already belongs to a layer") && e.contains("[4, 4]"),
        "{e}"
    );
    // Each layer under its own prefix, as Sequential::append_with does: 2 layers, 40.
    let st = ParamStore::new(&Device::Cpu, DType::F32);
    let model = Sequential::new(&st)
        .append_with(|s| Linear::new(4, 4, s))
        .unwrap()
        .append(Activation::Relu)
        .append_with(|s| Linear::new(4, 4, s))
        .unwrap();
    assert_eq!((model.len(), st.num_parameters()), (3, 40));
    drop(first);
}

/// `Sequential` runs a `Conv2d` followed by a ReLU and a `MaxPool2d` (either order) or by a
/// `MaxPool2d` alone as one fused node, and a ReLU followed by a `MaxPool2d` in the other
/// order (pooling first). The outputs and every gradient (input and parameters) must be
/// those of the layers run one by one in the written order, exactly: with ties, negative
/// windows, overlapping pooling windows, strided and grouped convolutions, and no bias.
#[test]
fn fused_conv_pool_and_relu_give_the_written_orders_values_and_gradients() -> anyhow::Result<()> {
    #[derive(Clone, Copy, Debug)]
    enum L {
        Relu,
        Pool(usize, usize),
    }
    // (conv: in, out, kernel, stride, padding, groups, bias; the layers after it)
    type Case = (
        (usize, usize, usize, usize, usize, usize, bool),
        &'static [L],
    );
    let cases: [Case; 8] = [
        ((2, 3, 3, 1, 1, 1, true), &[L::Relu, L::Pool(2, 2)]),
        // Conv2d → ReLU without pooling: one node too.
        ((2, 4, 3, 2, 1, 2, false), &[L::Relu]),
        ((2, 3, 3, 1, 0, 1, true), &[L::Relu, L::Relu]),
        ((2, 4, 3, 1, 1, 2, false), &[L::Pool(2, 2), L::Relu]),
        ((2, 3, 3, 2, 1, 1, true), &[L::Pool(2, 2)]),
        ((2, 3, 5, 1, 2, 1, true), &[L::Relu, L::Pool(3, 2)]),
        ((2, 3, 3, 1, 0, 1, true), &[L::Relu, L::Relu, L::Pool(2, 1)]),
        ((2, 3, 3, 1, 1, 1, true), &[L::Relu]),
    ];
    let flat = |t: &Tensor| -> anyhow::Result<Vec<f64>> {
        Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
    };
    for dtype in [DType::F32, DType::F64] {
        for ((cin, cout, k, stride, pad, groups, bias), after) in cases {
            let conv = |s: &ParamStore| {
                Conv2dConfig::new(cin, cout, (k, k))
                    .stride(stride)
                    .padding(pad)
                    .groups(groups)
                    .bias(bias)
                    .build(s)
            };
            let seq_store = ParamStore::new(&Device::Cpu, dtype);
            manual_seed(3);
            let mut model = Sequential::new(&seq_store).append_with(conv)?;
            for l in after {
                model = match *l {
                    L::Relu => model.append(Activation::Relu),
                    L::Pool(k, s) => model.append(MaxPool2d::new(k).stride(s)),
                };
            }
            let ref_store = ParamStore::new(&Device::Cpu, dtype);
            manual_seed(3);
            let c = conv(&ref_store.sub(0))?;
            let by_hand = |x: &Tensor| -> anyhow::Result<Tensor> {
                let mut h = c.forward(x)?;
                for l in after {
                    h = match *l {
                        L::Relu => Activation::Relu.forward(&h)?,
                        L::Pool(k, s) => MaxPool2d::new(k).stride(s).forward(&h)?,
                    };
                }
                Ok(h)
            };
            // Values from −2 to 2 in steps that give exact ties, and a negative region.
            let mut v: Vec<f64> = (0..2 * cin * 9 * 8)
                .map(|i| ((i * 37 % 17) as f64 - 8.0) / 4.0)
                .collect();
            v[90..130].iter_mut().for_each(|x| *x = -1.5);
            let x = taper_tensor::Var::from_tensor(
                &Tensor::from_vec(v, (2, cin, 9, 8), &Device::Cpu)?.to_dtype(dtype)?,
            )?;
            let run = |y: Tensor, store: &ParamStore| -> anyhow::Result<Vec<Vec<f64>>> {
                let r = Tensor::arange(0.0, y.elem_count() as f64, &Device::Cpu)?
                    .to_dtype(dtype)?
                    .reshape(y.shape())?;
                let loss = (y.sqr()?.sum_all()? + (&y * r)?.sum_all()?)?;
                let grads = loss.backward()?;
                let mut out = vec![flat(&y)?];
                out.push(flat(grads.get(x.as_tensor()).expect("an input gradient"))?);
                for (_, p) in store.trainable() {
                    out.push(flat(
                        grads.get(p.as_tensor()).expect("a parameter gradient"),
                    )?);
                }
                Ok(out)
            };
            let got = run(model.forward_t(x.as_tensor(), true)?, &seq_store)?;
            let want = run(by_hand(x.as_tensor())?, &ref_store)?;
            assert_eq!(got.len(), if bias { 4 } else { 3 });
            let case = format!("{dtype:?} conv {k}x{k}/{stride} g{groups} then {after:?}");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                // Equal as numbers (−0 and +0 too: see the check below).
                assert_eq!(
                    g, w,
                    "{case}: item {i} (output, input, weight, bias) differs"
                );
            }
            assert!(want[0].iter().any(|&v| v > 0.0), "{case}: positive outputs");
        }

        // NaN, and windows whose maximum is negative or zero: the values and the input
        // gradient of ReLU → MaxPool2d alone.
        let pool_store = ParamStore::new(&Device::Cpu, dtype);
        let pair = Sequential::new(&pool_store)
            .append(Activation::Relu)
            .append(MaxPool2d::new(2));
        let mut v: Vec<f64> = (0..2 * 6 * 4)
            .map(|i| ((i * 5 % 9) as f64 - 6.0) / 2.0)
            .collect();
        v[3] = f64::NAN;
        let x = taper_tensor::Var::from_tensor(
            &Tensor::from_vec(v, (1, 2, 6, 4), &Device::Cpu)?.to_dtype(dtype)?,
        )?;
        let pair_run = |y: Tensor| -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
            // Weights per output, so that each output's gradient differs.
            let r = Tensor::arange(1.0, 1.0 + y.elem_count() as f64, &Device::Cpu)?
                .to_dtype(dtype)?
                .reshape(y.shape())?;
            let finite = y.ne(&y)?.where_cond(&y.zeros_like()?, &y)?;
            let grads = (finite * r)?.sum_all()?.backward()?;
            let dx = grads.get(x.as_tensor()).expect("an input gradient");
            Ok((flat(&y)?, flat(dx)?))
        };
        let (got_y, got_dx) = pair_run(pair.forward_t(x.as_tensor(), true)?)?;
        let relu = Activation::Relu.forward(x.as_tensor())?;
        let (want_y, want_dx) = pair_run(MaxPool2d::new(2).forward(&relu)?)?;
        // Equal, or both NaN. (The generic path's ReLU, x·[x > 0], gives −0 for a negative
        // x, so a window of negatives and a zero may pool to −0 in one order and +0 in the
        // other: equal values.)
        let same = got_y.len() == want_y.len()
            && got_y
                .iter()
                .zip(&want_y)
                .all(|(a, b)| a == b || (a.is_nan() && b.is_nan()));
        assert!(
            same,
            "{dtype:?}: pooled values {got_y:?} against {want_y:?}"
        );
        assert!(
            want_y.iter().any(|v| v.is_nan()),
            "the NaN reaches the output"
        );
        assert!(want_y.contains(&0.0), "a window with no positive value");
        assert_eq!(got_dx, want_dx, "{dtype:?}: input gradient");
    }
    Ok(())
}

/// `Sequential` runs a `BatchNorm2d` followed by a ReLU and a `MaxPool2d` (either order) or
/// by a `MaxPool2d` alone as one fused node. Outputs, every gradient and the running
/// statistics must be those of the layers run one by one in the written order, exactly, in
/// training and in evaluation.
#[test]
fn fused_batch_norm_pool_gives_the_written_orders_values_gradients_and_statistics(
) -> anyhow::Result<()> {
    #[derive(Clone, Copy, Debug)]
    enum L {
        Relu,
        Pool(usize, usize),
    }
    let cases: [&[L]; 4] = [
        &[L::Relu, L::Pool(2, 2)],
        &[L::Pool(2, 2), L::Relu],
        &[L::Pool(2, 2)],
        &[L::Relu, L::Pool(3, 2)],
    ];
    let flat = |t: &Tensor| -> anyhow::Result<Vec<f64>> {
        Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
    };
    for dtype in [DType::F32, DType::F64] {
        for after in cases {
            for train in [true, false] {
                let build = |s: &ParamStore| -> anyhow::Result<BatchNorm> {
                    let bn = BatchNorm::new_2d(3, s)?;
                    let gamma = Tensor::new(&[1.5f64, -0.5, 0.75], &Device::Cpu)?;
                    s.var("weight")?.set(&gamma.to_dtype(dtype)?)?;
                    let beta = Tensor::new(&[0.25f64, 0.0, -0.5], &Device::Cpu)?;
                    s.var("bias")?.set(&beta.to_dtype(dtype)?)?;
                    s.var("running_var")?
                        .set(&Tensor::new(&[2.0f64, 0.5, 1.0], &Device::Cpu)?.to_dtype(dtype)?)?;
                    Ok(bn)
                };
                let seq_store = ParamStore::new(&Device::Cpu, dtype);
                let mut model = Sequential::new(&seq_store).append_with(build)?;
                for l in after {
                    model = match *l {
                        L::Relu => model.append(Activation::Relu),
                        L::Pool(k, s) => model.append(MaxPool2d::new(k).stride(s)),
                    };
                }
                let ref_store = ParamStore::new(&Device::Cpu, dtype);
                let bn = build(&ref_store.sub(0))?;
                let by_hand = |x: &Tensor| -> anyhow::Result<Tensor> {
                    let mut h = bn.forward_t(x, train)?;
                    for l in after {
                        h = match *l {
                            L::Relu => Activation::Relu.forward(&h)?,
                            L::Pool(k, s) => MaxPool2d::new(k).stride(s).forward(&h)?,
                        };
                    }
                    Ok(h)
                };
                let v: Vec<f64> = (0..2 * 3 * 7 * 6)
                    .map(|i| ((i * 37 % 17) as f64 - 8.0) / 4.0)
                    .collect();
                let x = taper_tensor::Var::from_tensor(
                    &Tensor::from_vec(v, (2, 3, 7, 6), &Device::Cpu)?.to_dtype(dtype)?,
                )?;
                let run = |y: Tensor, store: &ParamStore| -> anyhow::Result<Vec<Vec<f64>>> {
                    let r = Tensor::arange(0.0, y.elem_count() as f64, &Device::Cpu)?
                        .to_dtype(dtype)?
                        .reshape(y.shape())?;
                    let loss = (y.sqr()?.sum_all()? + (&y * r)?.sum_all()?)?;
                    let grads = loss.backward()?;
                    let mut out = vec![flat(&y)?];
                    out.push(flat(grads.get(x.as_tensor()).expect("an input gradient"))?);
                    for (_, p) in store.trainable() {
                        out.push(flat(
                            grads.get(p.as_tensor()).expect("a parameter gradient"),
                        )?);
                    }
                    for (_, b) in store.buffers() {
                        out.push(flat(b.as_tensor())?);
                    }
                    Ok(out)
                };
                let got = run(model.forward_t(x.as_tensor(), train)?, &seq_store)?;
                let want = run(by_hand(x.as_tensor())?, &ref_store)?;
                // Output, input gradient, γ and β gradients, three buffers.
                assert_eq!(got.len(), 7);
                let case = format!("{dtype:?} train {train}: BatchNorm2d then {after:?}");
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(g, w, "{case}: item {i} differs");
                }
                assert!(want[0].iter().any(|&v| v > 0.0), "{case}: positive outputs");
            }
        }
    }
    Ok(())
}
