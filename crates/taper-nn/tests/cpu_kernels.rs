//! The CPU kernels behind `Conv2d`, `MaxPool2d`, `AvgPool2d` and `BatchNorm`: PyTorch's
//! values and gradients (`fixtures/nn_reference.py`) in f64 and f32, on the kernel and on candle's
//! generic path; the kernel equal to the generic path on random configurations; no gradient
//! for the data batch; and errors, not panics, for windows that do not fit.

mod common;

use common::{check_case_as, Build, Inputs};
use taper_nn::*;
use taper_tensor::{
    manual_seed, no_grad, randn, with_generic_kernels, DType, Device, Module, ModuleT, ParamStore,
    Tensor, Var,
};

type Fwd = Box<dyn Fn(&Inputs) -> anyhow::Result<Tensor>>;

fn module(m: impl Module + 'static) -> anyhow::Result<Fwd> {
    Ok(Box::new(move |i: &Inputs| Ok(m.forward(&i["x"])?)))
}

/// The layer of each convolution and pooling fixture case.
fn layer(case: &str) -> Box<Build> {
    let conv = |cin, cout, k, stride, padding, dilation, groups, bias| -> Box<Build> {
        let cfg = Conv2dConfig::new(cin, cout, k)
            .stride(stride)
            .padding(padding)
            .dilation(dilation)
            .groups(groups)
            .bias(bias);
        Box::new(move |s: &ParamStore| module(cfg.build(s)?))
    };
    match case {
        "conv2d" => conv(2, 3, (3, 3), 1, 1, 1, 1, true),
        "conv2d_stride2_nobias" => conv(2, 4, (3, 2), 2, 0, 1, 1, false),
        "conv2d_s2_p2" => conv(3, 4, (3, 3), 2, 2, 1, 1, true),
        "conv2d_dilation2" => conv(2, 3, (3, 3), 1, 1, 2, 1, true),
        "conv2d_groups2" => conv(4, 6, (3, 2), 1, 1, 1, 2, true),
        "conv2d_depthwise" => conv(3, 3, (3, 3), 1, 1, 1, 3, false),
        "conv2d_odd_s3_p1_d2" => conv(2, 5, (2, 3), 3, 1, 2, 1, true),
        "conv2d_1x1" => conv(4, 2, (1, 1), 1, 0, 1, 1, true),
        "conv2d_kernel_equals_padded_input" => conv(1, 2, (5, 5), 1, 1, 1, 1, true),
        "maxpool2d" => Box::new(|_: &ParamStore| module(MaxPool2d::new(2))),
        "maxpool2d_k2_odd" => Box::new(|_: &ParamStore| module(MaxPool2d::new(2))),
        "maxpool2d_k3s2" | "maxpool2d_k3s2_odd" => {
            Box::new(|_: &ParamStore| module(MaxPool2d::new(3).stride(2)))
        }
        "maxpool2d_k3s1" => Box::new(|_: &ParamStore| module(MaxPool2d::new(3).stride(1))),
        "avgpool2d" | "avgpool2d_k2_odd" => Box::new(|_: &ParamStore| module(AvgPool2d::new(2))),
        "avgpool2d_k3s2_odd" => Box::new(|_: &ParamStore| module(AvgPool2d::new(3).stride(2))),
        "batchnorm1d_train" | "batchnorm1d_eval" | "batchnorm1d_3d_train" => {
            let (c, train) = match case {
                "batchnorm1d_train" => (5, true),
                "batchnorm1d_eval" => (5, false),
                _ => (3, true),
            };
            Box::new(move |s: &ParamStore| {
                let bn = BatchNorm::new_1d(c, s)?;
                Ok(Box::new(move |i: &Inputs| Ok(bn.forward_t(&i["x"], train)?)) as Fwd)
            })
        }
        "batchnorm2d_train" | "batchnorm2d_eval" => {
            let train = case == "batchnorm2d_train";
            Box::new(move |s: &ParamStore| {
                let bn = BatchNorm::new_2d(3, s)?;
                Ok(Box::new(move |i: &Inputs| Ok(bn.forward_t(&i["x"], train)?)) as Fwd)
            })
        }
        other => panic!("no layer for {other}"),
    }
}

const CASES: [&str; 22] = [
    "batchnorm1d_train",
    "batchnorm1d_eval",
    "batchnorm1d_3d_train",
    "batchnorm2d_train",
    "batchnorm2d_eval",
    "conv2d",
    "conv2d_stride2_nobias",
    "conv2d_s2_p2",
    "conv2d_dilation2",
    "conv2d_groups2",
    "conv2d_depthwise",
    "conv2d_odd_s3_p1_d2",
    "conv2d_1x1",
    "conv2d_kernel_equals_padded_input",
    "maxpool2d",
    "maxpool2d_k2_odd",
    "maxpool2d_k3s2",
    "maxpool2d_k3s2_odd",
    "maxpool2d_k3s1",
    "avgpool2d",
    "avgpool2d_k2_odd",
    "avgpool2d_k3s2_odd",
];

#[test]
fn conv_and_pool_options_match_pytorch_on_both_paths_in_f64_and_f32() {
    for case in CASES {
        // The CPU kernel, in f64 and in f32 (the training path).
        check_case_as(case, DType::F64, (1e-10, 1e-8), layer(case));
        check_case_as(case, DType::F32, (1e-5, 1e-4), layer(case));
        // candle's generic ops.
        with_generic_kernels(|| {
            check_case_as(case, DType::F64, (1e-10, 1e-8), layer(case));
            check_case_as(case, DType::F32, (1e-5, 1e-4), layer(case));
        });
    }
}

/// Output and gradients (of sum(y·r) with respect to x and every parameter) of `f`.
fn run(
    f: &dyn Fn(&Tensor, &ParamStore) -> anyhow::Result<Tensor>,
    x: &Tensor,
    store: &ParamStore,
) -> Vec<Vec<f64>> {
    let xv = Var::from_tensor(x).unwrap();
    let y = f(xv.as_tensor(), store).unwrap();
    manual_seed(99);
    let r = randn(y.shape(), 0.0, 1.0, y.dtype(), &Device::Cpu).unwrap();
    let grads = y.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    let flat = |t: &Tensor| -> Vec<f64> {
        t.flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let mut out = vec![
        flat(&y),
        flat(grads.get(xv.as_tensor()).expect("input grad")),
    ];
    for (_, var) in store.trainable() {
        out.push(flat(grads.get(var.as_tensor()).expect("parameter grad")));
    }
    out
}

/// The kernel and the generic path agree on `f` for an input of `shape`, in f32 and f64.
fn same_on_both_paths(
    what: &str,
    shape: &[usize],
    f: &dyn Fn(&Tensor, &ParamStore) -> anyhow::Result<Tensor>,
) {
    // Tolerances relative to the largest element of each tensor: a weight gradient sums
    // thousands of products, and f32 rounds them differently in a different order.
    for (dt, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
        // The same seed for both: the same input and the same initial weights, each layer
        // in a store of its own.
        let fresh = || {
            manual_seed(7);
            let store = ParamStore::new(&Device::Cpu, dt);
            let x = randn(shape, 0.0, 1.0, dt, &Device::Cpu).unwrap();
            (store, x)
        };
        let (store, x) = fresh();
        let fast = run(f, &x, &store);
        let (store, x) = fresh();
        let generic = with_generic_kernels(|| run(f, &x, &store));
        for (k, (a, b)) in fast.iter().zip(&generic).enumerate() {
            assert_eq!(a.len(), b.len(), "{what} {dt:?} tensor {k}");
            let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            for (i, (p, q)) in a.iter().zip(b).enumerate() {
                assert!(
                    (p - q).abs() <= tol * scale,
                    "{what} {dt:?} tensor {k} [{i}]: kernel {p} vs generic {q}"
                );
            }
        }
    }
}

/// (input shape, out channels, kernel, stride, padding, dilation, groups, bias).
type ConvCase = (
    &'static [usize],
    usize,
    (usize, usize),
    usize,
    usize,
    usize,
    usize,
    bool,
);

#[test]
fn the_kernels_equal_candles_generic_ops_on_random_configurations() {
    // (input shape, out channels, kernel, stride, padding, dilation, groups, bias)
    let convs: [ConvCase; 7] = [
        (&[4, 1, 28, 28], 16, (5, 5), 1, 2, 1, 1, true),
        (&[3, 16, 14, 14], 32, (5, 5), 1, 2, 1, 1, true),
        (&[2, 6, 11, 9], 4, (3, 3), 2, 1, 1, 2, false),
        (&[2, 4, 10, 12], 8, (3, 2), 1, 3, 2, 4, true),
        (&[5, 3, 7, 7], 6, (1, 1), 1, 0, 1, 1, true),
        (&[1, 2, 9, 13], 3, (4, 3), 3, 0, 1, 1, true),
        (&[2, 2, 3, 3], 2, (3, 3), 1, 0, 1, 1, true),
    ];
    for (shape, out, k, stride, padding, dilation, groups, bias) in convs {
        let cfg = Conv2dConfig::new(shape[1], out, k)
            .stride(stride)
            .padding(padding)
            .dilation(dilation)
            .groups(groups)
            .bias(bias);
        same_on_both_paths(&format!("conv {shape:?} {cfg:?}"), shape, &|x, s| {
            Ok(cfg.build(s)?.forward(x)?)
        });
    }
    for (shape, train) in [
        (&[8, 16, 14, 14][..], true),
        (&[3, 4, 5], true),
        (&[6, 7], false),
    ] {
        same_on_both_paths(
            &format!("batch norm {shape:?} train {train}"),
            shape,
            &|x, s| {
                let bn = match shape.len() {
                    4 => BatchNorm::new_2d(shape[1], s)?,
                    _ => BatchNorm::new_1d(shape[1], s)?,
                };
                // Non-trivial scale, shift and running statistics.
                for (name, v) in [
                    ("weight", 1.5),
                    ("bias", -0.5),
                    ("running_mean", 0.3),
                    ("running_var", 2.0),
                ] {
                    let var = s.var(name)?;
                    var.set(&(var.as_tensor().ones_like()? * v)?)?;
                }
                Ok(bn.forward_t(x, train)?)
            },
        );
    }
    // Random inputs have no ties, where the two paths' max-pool gradients would differ.
    for (shape, k, s) in [
        (&[4, 16, 28, 28][..], 2, 2),
        (&[2, 3, 9, 11], 3, 2),
        (&[2, 3, 7, 5], 2, 1),
        (&[1, 2, 5, 5], 5, 5),
    ] {
        same_on_both_paths(&format!("maxpool {shape:?} {k}/{s}"), shape, &|x, _| {
            Ok(MaxPool2d::new(k).stride(s).forward(x)?)
        });
        same_on_both_paths(&format!("avgpool {shape:?} {k}/{s}"), shape, &|x, _| {
            Ok(AvgPool2d::new(k).stride(s).forward(x)?)
        });
    }
}

#[test]
fn evaluation_takes_the_kernel_too_and_builds_no_graph() {
    manual_seed(3);
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let conv = Conv2d::new(3, 5, (3, 3), &store).unwrap();
    let x = randn((2, 3, 8, 8), 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
    let eval = no_grad(|| conv.forward(&x)).unwrap();
    assert!(!eval.track_op());
    let generic = with_generic_kernels(|| no_grad(|| conv.forward(&x))).unwrap();
    let (a, b): (Vec<f32>, Vec<f32>) = (
        eval.flatten_all().unwrap().to_vec1().unwrap(),
        generic.flatten_all().unwrap().to_vec1().unwrap(),
    );
    for (p, q) in a.iter().zip(&b) {
        assert!((p - q).abs() <= 1e-5 * (1.0 + q.abs()));
    }
}

#[test]
fn the_constant_data_batch_gets_no_gradient() {
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let conv = Conv2d::new(1, 4, (3, 3), &store).unwrap();
    let x = Tensor::ones((2, 1, 6, 6), DType::F32, &Device::Cpu).unwrap();
    let y = MaxPool2d::new(2)
        .forward(&conv.forward(&x).unwrap())
        .unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&x).is_none(), "no gradient for the input batch");
    for name in ["weight", "bias"] {
        assert!(grads.get(store.var(name).unwrap().as_tensor()).is_some());
    }
}

#[test]
fn max_pool_ties_send_the_gradient_to_the_first_maximum_as_pytorch_does() {
    // torch: F.max_pool2d(ones(1,1,2,2), 2).sum().backward() puts 1 at [0, 0] only.
    let x =
        Var::from_tensor(&Tensor::ones((1, 1, 2, 4), DType::F32, &Device::Cpu).unwrap()).unwrap();
    let y = MaxPool2d::new(2).forward(x.as_tensor()).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    let g: Vec<f32> = g
        .get(x.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(g, [1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
}

#[test]
fn windows_that_do_not_fit_are_errors_not_panics_on_both_paths() {
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let conv = |k: usize, dilation: usize, name: &str| {
        Conv2dConfig::new(1, 2, (k, k))
            .dilation(dilation)
            .build(&store.sub(name))
            .unwrap()
    };
    let cases = [
        (conv(5, 1, "a"), (1, 1, 4, 8)),
        (conv(1, 1, "b"), (1, 1, 0, 8)),
        (conv(3, 4, "c"), (1, 1, 8, 8)),
    ];
    for generic in [false, true] {
        for (layer, shape) in &cases {
            let x = Tensor::zeros(*shape, DType::F32, &Device::Cpu).unwrap();
            let r = if generic {
                with_generic_kernels(|| layer.forward(&x))
            } else {
                layer.forward(&x)
            };
            let e = r
                .expect_err("a window larger than the padded input")
                .to_string();
            assert!(
                e.contains("Conv2d(1 -> 2") && e.contains("dilated kernel"),
                "{e}"
            );
        }
        let x = Tensor::zeros((1, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
        for pool in [MaxPool2d::new(0), MaxPool2d::new(2).stride(0)] {
            let e = pool.forward(&x).expect_err("a zero window").to_string();
            assert!(e.contains("positive window sizes and strides"), "{e}");
        }
        let e = AvgPool2d::new(0).forward(&x).unwrap_err().to_string();
        assert!(e.contains("positive window sizes"), "{e}");
    }
    let e = Conv2d::new(1, 2, (0, 3), &store.sub("d")).unwrap_err();
    assert!(e.to_string().contains("kernel height"), "{e}");
}

#[test]
fn an_empty_batch_gives_an_empty_output_and_zero_parameter_gradients() {
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let conv = Conv2d::new(2, 3, (3, 3), &store).unwrap();
    let x =
        Var::from_tensor(&Tensor::zeros((0, 2, 5, 5), DType::F32, &Device::Cpu).unwrap()).unwrap();
    let y = MaxPool2d::new(2)
        .forward(&conv.forward(x.as_tensor()).unwrap())
        .unwrap();
    assert_eq!(y.dims(), &[0, 3, 1, 1]);
    let grads = y.sum_all().unwrap().backward().unwrap();
    let gw = grads.get(store.var("weight").unwrap().as_tensor()).unwrap();
    assert_eq!(gw.dims(), &[3, 2, 3, 3]);
    assert_eq!(
        gw.abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        0.0
    );
    assert_eq!(grads.get(x.as_tensor()).unwrap().dims(), &[0, 2, 5, 5]);
}

#[test]
fn other_dtypes_and_strided_inputs_take_a_working_path() {
    manual_seed(5);
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let conv = Conv2d::new(3, 4, (3, 3), &store).unwrap();
    // A non-contiguous input (a transposed view) gives the same result as its copy.
    let x = randn((2, 3, 7, 9), 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
    let xt = x.transpose(2, 3).unwrap();
    let a = conv.forward(&xt).unwrap();
    let b = conv.forward(&xt.contiguous().unwrap()).unwrap();
    let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
    // f16 runs on candle's generic ops (the kernels take f32 and f64).
    let s16 = ParamStore::new(&Device::Cpu, DType::F16);
    let c16 = Conv2d::new(3, 4, (3, 3), &s16).unwrap();
    let y = c16.forward(&x.to_dtype(DType::F16).unwrap()).unwrap();
    assert_eq!((y.dtype(), y.dims()), (DType::F16, &[2, 4, 5, 7][..]));
    let p = MaxPool2d::new(2).forward(&y).unwrap();
    assert_eq!(p.dims(), &[2, 4, 2, 3]);
}

/// The sequence models' element-wise kernels (LayerNorm, GELU, dropout) equal candle's
/// generic ops, with and without an affine transform, over one and two normalized
/// dimensions; dropout's mask is the same from the same seed, so the two paths agree to the
/// bit.
#[test]
fn layer_norm_gelu_and_dropout_kernels_equal_the_generic_ops() {
    for (shape, norm) in [
        (&[6, 5, 16][..], &[16][..]),
        (&[3, 4, 3], &[4, 3]),
        (&[300, 130], &[130]),
    ] {
        for affine in [true, false] {
            same_on_both_paths(
                &format!("layer norm {shape:?} over {norm:?} affine {affine}"),
                shape,
                &|x, s| {
                    let ln = LayerNormConfig::new(norm)
                        .elementwise_affine(affine)
                        .build(s)?;
                    if affine {
                        for (name, v) in [("weight", 1.5), ("bias", -0.5)] {
                            let var = s.var(name)?;
                            let r = randn(var.shape(), v, 0.3, var.dtype(), &Device::Cpu)?;
                            var.set(&r)?;
                        }
                    }
                    Ok(ln.forward(x)?)
                },
            );
        }
    }
    for shape in [&[7, 33][..], &[40_000]] {
        same_on_both_paths(&format!("gelu {shape:?}"), shape, &|x, _| {
            Ok(activation::gelu(&(x * 3.0)?)?)
        });
    }
    for dt in [DType::F32, DType::F64] {
        let draw = |generic: bool| {
            manual_seed(11);
            let x =
                Var::from_tensor(&randn((50, 70), 0.0, 1.0, dt, &Device::Cpu).unwrap()).unwrap();
            let f = || {
                let y = dropout(x.as_tensor(), 0.3, true).unwrap();
                let g = y.sum_all().unwrap().backward().unwrap();
                (y, g.get(x.as_tensor()).unwrap().clone())
            };
            let (y, g) = if generic {
                with_generic_kernels(f)
            } else {
                f()
            };
            let bits = |t: &Tensor| -> Vec<f64> {
                t.flatten_all()
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            };
            (bits(&y), bits(&g))
        };
        let (fast, generic) = (draw(false), draw(true));
        assert_eq!(fast, generic, "dropout {dt:?}");
        let dropped = fast.0.iter().filter(|v| **v == 0.0).count() as f64 / 3500.0;
        assert!((dropped - 0.3).abs() < 0.05, "{dropped}");
    }
}
