//! Every layer (with respect to its input and its parameters), activation and loss passes
//! `gradcheck`: f64 central differences, PyTorch's tolerances.

mod common;

use common::store_with;
use taper_nn::*;
use taper_tensor::{
    gradcheck, manual_seed, randn, DType, Device, GradcheckOptions, Module, ModuleT, Tensor,
};

fn r(shape: &[usize], seed: u64) -> Tensor {
    manual_seed(seed);
    randn(shape, 0.0, 1.0, DType::F64, &Device::Cpu).unwrap()
}

fn check(what: &str, f: impl Fn(&[Tensor]) -> anyhow::Result<Tensor>, inputs: &[Tensor]) {
    let f = |xs: &[Tensor]| f(xs).map_err(|e| taper_tensor::Error::GradcheckFailed(e.to_string()));
    let report = gradcheck(f, inputs, GradcheckOptions::default()).unwrap();
    assert!(report.passed, "{what}: {report:?}");
    assert!(report.checked > 0);
}

#[test]
fn linear_wrt_input_weight_and_bias() {
    check(
        "linear",
        |xs| {
            let s = store_with(&["weight", "bias"], xs);
            Ok(Linear::new(4, 3, &s)?.forward(&xs[0])?)
        },
        &[r(&[2, 4], 1), r(&[3, 4], 2), r(&[3], 3)],
    );
    check(
        "linear 3-d input",
        |xs| {
            let s = store_with(&["weight"], xs);
            Ok(LinearConfig::new(4, 2)
                .bias(false)
                .build(&s)?
                .forward(&xs[0])?)
        },
        &[r(&[2, 3, 4], 1), r(&[2, 4], 2)],
    );
}

#[test]
fn normalization_layers() {
    for train in [true, false] {
        check(
            "batchnorm1d",
            |xs| {
                let s = store_with(&["weight", "bias"], xs);
                Ok(BatchNorm::new_1d(3, &s)?.forward_t(&xs[0], train)?)
            },
            &[r(&[5, 3], 1), r(&[3], 2), r(&[3], 3)],
        );
    }
    check(
        "batchnorm2d",
        |xs| {
            let s = store_with(&["weight", "bias"], xs);
            Ok(BatchNorm::new_2d(2, &s)?.forward_t(&xs[0], true)?)
        },
        &[r(&[2, 2, 3, 3], 1), r(&[2], 2), r(&[2], 3)],
    );
    check(
        "layernorm",
        |xs| {
            let s = store_with(&["weight", "bias"], xs);
            Ok(LayerNorm::new(&[2, 3], &s)?.forward(&xs[0])?)
        },
        &[r(&[4, 2, 3], 1), r(&[2, 3], 2), r(&[2, 3], 3)],
    );
}

#[test]
fn conv_pool_embedding_flatten_dropout() {
    check(
        "conv2d",
        |xs| {
            let s = store_with(&["weight", "bias"], xs);
            let conv = Conv2dConfig::new(2, 3, (3, 3)).padding(1).stride(2);
            Ok(conv.build(&s)?.forward(&xs[0])?)
        },
        &[r(&[1, 2, 5, 5], 1), r(&[3, 2, 3, 3], 2), r(&[3], 3)],
    );
    // The CPU kernel (f64) and candle's generic ops, on the options the kernel handles.
    for generic in [false, true] {
        for (what, cin, cout, k, cfg, shape) in [
            (
                "conv2d dilation 2",
                2,
                3,
                (3, 3),
                (1, 1, 2, 1),
                [1, 2, 7, 6],
            ),
            ("conv2d groups 2", 4, 2, (3, 2), (1, 1, 1, 2), [2, 4, 5, 5]),
            (
                "conv2d depthwise stride 2",
                3,
                3,
                (3, 3),
                (2, 2, 1, 3),
                [1, 3, 6, 7],
            ),
            ("conv2d 1x1", 3, 2, (1, 1), (1, 0, 1, 1), [2, 3, 3, 4]),
        ] {
            let (stride, padding, dilation, groups) = cfg;
            let conv = Conv2dConfig::new(cin, cout, k)
                .stride(stride)
                .padding(padding)
                .dilation(dilation)
                .groups(groups);
            let w = [cout, cin / groups, k.0, k.1];
            let f = |xs: &[Tensor]| -> anyhow::Result<Tensor> {
                let s = store_with(&["weight", "bias"], xs);
                Ok(conv.build(&s)?.forward(&xs[0])?)
            };
            let inputs = [r(&shape, 11), r(&w, 12), r(&[cout], 13)];
            if generic {
                taper_tensor::with_generic_kernels(|| check(what, f, &inputs));
            } else {
                check(what, f, &inputs);
            }
        }
    }
    check(
        "maxpool 2",
        |xs| Ok(MaxPool2d::new(2).forward(&xs[0])?),
        &[r(&[1, 2, 4, 5], 4)],
    );
    check(
        "maxpool 3/2",
        |xs| Ok(MaxPool2d::new(3).stride(2).forward(&xs[0])?),
        &[r(&[1, 1, 7, 6], 5)],
    );
    check(
        "avgpool 2",
        |xs| Ok(AvgPool2d::new(2).forward(&xs[0])?),
        &[r(&[1, 2, 4, 4], 6)],
    );
    check(
        "avgpool 3/1",
        |xs| Ok(AvgPool2d::new(3).stride(1).forward(&xs[0])?),
        &[r(&[1, 1, 5, 4], 7)],
    );
    let ids = Tensor::new(&[[1u32, 4], [4, 0]], &Device::Cpu).unwrap();
    check(
        "embedding",
        |xs| {
            let s = store_with(&["weight"], xs);
            Ok(Embedding::new(5, 3, &s)?.forward(&ids)?)
        },
        &[r(&[1], 0), r(&[5, 3], 8)],
    );
    check(
        "flatten",
        |xs| Ok(Flatten::default().forward(&xs[0])?),
        &[r(&[2, 3, 2], 9)],
    );
    // Dropout with a fixed mask (re-seeded on every evaluation).
    check(
        "dropout",
        |xs| {
            manual_seed(11);
            Ok(Dropout::new(0.3)?.forward_t(&xs[0], true)?)
        },
        &[r(&[4, 5], 10)],
    );
}

#[test]
fn activations() {
    // Keep away from the kinks of relu/leaky relu/elu at 0.
    let x = r(&[3, 4], 12).affine(1.0, 0.0).unwrap();
    for a in [
        Activation::Relu,
        Activation::LeakyRelu(0.2),
        Activation::Elu(1.3),
        Activation::Gelu,
        Activation::GeluTanh,
        Activation::Silu,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Softmax(-1),
        Activation::Softmax(0),
        Activation::LogSoftmax(1),
    ] {
        check(
            &format!("{a:?}"),
            |xs| Ok(a.forward(&xs[0])?),
            std::slice::from_ref(&x),
        );
    }
}

#[test]
fn losses() {
    let (x, y) = (r(&[4, 3], 13), r(&[4, 3], 14));
    for red in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        check(
            "mse",
            |xs| Ok(mse_loss(&xs[0], &xs[1], red)?),
            &[x.clone(), y.clone()],
        );
        check(
            "l1",
            |xs| Ok(l1_loss(&xs[0], &y, red)?),
            std::slice::from_ref(&x),
        );
        check(
            "smooth_l1",
            |xs| Ok(smooth_l1_loss(&xs[0], &y, 0.8, red)?),
            std::slice::from_ref(&x),
        );
        check(
            "huber",
            |xs| Ok(huber_loss(&xs[0], &y, 0.6, red)?),
            std::slice::from_ref(&x),
        );
        let classes = Tensor::new(&[2i64, -100, 0, 1], &Device::Cpu).unwrap();
        let w = Tensor::new(&[0.5f64, 2.0, 1.0], &Device::Cpu).unwrap();
        check(
            "cross_entropy",
            |xs| {
                let ce = CrossEntropyLoss {
                    weight: Some(w.clone()),
                    label_smoothing: 0.1,
                    reduction: red,
                    ..CrossEntropyLoss::new()
                };
                Ok(ce.forward(&xs[0], Target::Classes(&classes))?)
            },
            std::slice::from_ref(&x),
        );
        let probs = taper_nn::activation::softmax(&y, 1).unwrap();
        check(
            "cross_entropy probs",
            |xs| {
                let ce = CrossEntropyLoss {
                    reduction: red,
                    label_smoothing: 0.05,
                    ..CrossEntropyLoss::new()
                };
                Ok(ce.forward(&xs[0], Target::Probs(&probs))?)
            },
            std::slice::from_ref(&x),
        );
        check(
            "nll",
            |xs| {
                let nll = NllLoss {
                    weight: Some(w.clone()),
                    reduction: red,
                    ..NllLoss::new()
                };
                Ok(nll.forward(&xs[0], &classes)?)
            },
            std::slice::from_ref(&x),
        );
        let t = y.gt(0.0).unwrap().to_dtype(DType::F64).unwrap();
        let pw = Tensor::new(&[1.5f64, 0.5, 2.0], &Device::Cpu).unwrap();
        check(
            "bce_with_logits",
            |xs| {
                Ok(binary_cross_entropy_with_logits(
                    &xs[0],
                    &t,
                    Some(&pw),
                    Some(&pw),
                    red,
                )?)
            },
            std::slice::from_ref(&x),
        );
    }
    let logp = taper_nn::activation::log_softmax(&x, 1).unwrap();
    let p = taper_nn::activation::softmax(&y, 1).unwrap();
    for red in [
        KlReduction::Mean,
        KlReduction::BatchMean,
        KlReduction::Sum,
        KlReduction::None,
    ] {
        check(
            "kl_div",
            |xs| Ok(kl_div(&xs[0], &p, red, false)?),
            std::slice::from_ref(&logp),
        );
        check(
            "kl_div log_target",
            |xs| Ok(kl_div(&xs[0], &xs[1], red, true)?),
            &[logp.clone(), p.log().unwrap()],
        );
    }
}

#[test]
fn regularizers() {
    check(
        "l1 + l2 penalties",
        |xs| {
            let s = store_with(&["0.weight", "0.bias"], xs);
            let l1 = regularization::l1_penalty(&s, regularization::all)?;
            let l2 = regularization::l2_penalty(&s, regularization::weights_only)?;
            Ok((l1 + l2)?)
        },
        &[r(&[1], 0), r(&[3, 2], 15), r(&[3], 16)],
    );
}

/// The sequence layers in f64, with respect to their inputs and (some of) their parameters,
/// attention on Taper's CPU kernel and on candle's generic ops.
#[test]
fn sequence_layers() {
    for generic in [false, true] {
        let run = |f: &dyn Fn()| {
            if generic {
                taper_tensor::with_generic_kernels(f)
            } else {
                f()
            }
        };
        run(&|| {
            for causal in [false, true] {
                check(
                    "scaled_dot_product_attention",
                    |xs| {
                        Ok(scaled_dot_product_attention(
                            &xs[0], &xs[1], &xs[2], None, 0.0, causal, None,
                        )?)
                    },
                    &[
                        r(&[1, 2, 3, 4], 1),
                        r(&[1, 2, 5, 4], 2),
                        r(&[1, 2, 5, 3], 3),
                    ],
                );
            }
            check(
                "scaled_dot_product_attention, additive mask",
                |xs| {
                    Ok(scaled_dot_product_attention(
                        &xs[0],
                        &xs[1],
                        &xs[2],
                        Some(&xs[3]),
                        0.0,
                        false,
                        Some(0.7),
                    )?)
                },
                &[
                    r(&[2, 3, 4], 1),
                    r(&[2, 3, 4], 2),
                    r(&[2, 3, 2], 3),
                    r(&[3, 3], 4),
                ],
            );
        });
    }
    check(
        "multihead attention (self)",
        |xs| {
            // The parameters not given are initialized the same way on every call.
            manual_seed(0);
            let s = store_with(&["in_proj_weight", "in_proj_bias"], xs);
            let mha = MultiheadAttentionConfig::new(4, 2)
                .batch_first(true)
                .build(&s)?;
            Ok(mha.forward_t(&xs[0], false)?)
        },
        &[r(&[2, 3, 4], 1), r(&[12, 4], 2), r(&[12], 3)],
    );
    check(
        "transformer encoder layer (pre-norm, gelu)",
        |xs| {
            // The parameters not given are initialized the same way on every call.
            manual_seed(0);
            let s = store_with(&["linear1.weight"], xs);
            let layer = TransformerConfig::new(4, 2)
                .dim_feedforward(6)
                .batch_first(true)
                .norm_first(true)
                .activation(FeedForwardActivation::Gelu)
                .encoder_layer(&s)?;
            Ok(layer.forward_t(&xs[0], false)?)
        },
        &[r(&[2, 3, 4], 1), r(&[6, 4], 2)],
    );
    check(
        "LSTM",
        |xs| {
            // The parameters not given are initialized the same way on every call.
            manual_seed(0);
            let s = store_with(&["weight_ih_l0", "weight_hh_l0", "bias_ih_l0"], xs);
            let lstm = RecurrentConfig::new(3, 2).batch_first(true).lstm(&s)?;
            let (y, (h, c)) = lstm.forward_with(&xs[0], None, false)?;
            Ok((y.sum_all()? + h.sum_all()? + c.sum_all()?)?)
        },
        &[r(&[2, 4, 3], 1), r(&[8, 3], 2), r(&[8, 2], 3), r(&[8], 4)],
    );
    check(
        "GRU, bidirectional, from h0",
        |xs| {
            // The parameters not given are initialized the same way on every call.
            manual_seed(0);
            let s = store_with(&["weight_ih_l0", "weight_hh_l0"], xs);
            let gru = RecurrentConfig::new(3, 2).bidirectional(true).gru(&s)?;
            Ok(gru.forward_with(&xs[0], Some(&xs[3]), false)?.0)
        },
        &[
            r(&[4, 2, 3], 1),
            r(&[6, 3], 2),
            r(&[6, 2], 3),
            r(&[2, 2, 2], 4),
        ],
    );
    check(
        "RNN tanh",
        |xs| {
            // The parameters not given are initialized the same way on every call.
            manual_seed(0);
            let s = store_with(&["weight_ih_l0"], xs);
            let rnn = RecurrentConfig::new(3, 2).rnn(RnnNonlinearity::Tanh, &s)?;
            Ok(rnn.forward_with(&xs[0], None, false)?.0)
        },
        &[r(&[4, 2, 3], 1), r(&[2, 3], 2)],
    );
    check(
        "RMSNorm",
        |xs| {
            // The parameters not given are initialized the same way on every call.
            manual_seed(0);
            let s = store_with(&["weight"], xs);
            Ok(RmsNormConfig::new(&[4]).build(&s)?.forward(&xs[0])?)
        },
        &[r(&[3, 4], 1), r(&[4], 2)],
    );
    check(
        "rotary embedding",
        |xs| Ok(apply_rotary(&xs[0], 2, 10000.0)?),
        &[r(&[2, 3, 4], 1)],
    );
    check(
        "learned positions",
        |xs| {
            // The parameters not given are initialized the same way on every call.
            manual_seed(0);
            let s = store_with(&["weight"], xs);
            Ok(PositionalEmbedding::new(5, 4, &s)?.forward(&xs[0])?)
        },
        &[r(&[2, 3, 4], 1), r(&[5, 4], 2)],
    );
}
