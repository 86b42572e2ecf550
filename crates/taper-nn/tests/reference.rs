//! Every layer, activation and loss against PyTorch's values and gradients
//! (`fixtures/nn_reference.py` → `fixtures/nn_reference.json`), in f64.

mod common;

use common::{check_case, Inputs};
use taper_nn::{activation as act, *};
use taper_tensor::{Module, ModuleT, ParamStore, Tensor};

type Fwd = Box<dyn Fn(&Inputs) -> anyhow::Result<Tensor>>;

fn module(m: impl Module + 'static) -> anyhow::Result<Fwd> {
    Ok(Box::new(move |i: &Inputs| Ok(m.forward(&i["x"])?)))
}

fn module_t(m: impl ModuleT + 'static, train: bool) -> anyhow::Result<Fwd> {
    Ok(Box::new(move |i: &Inputs| Ok(m.forward_t(&i["x"], train)?)))
}

fn func(
    f: impl Fn(&Inputs) -> anyhow::Result<Tensor> + 'static,
) -> impl FnOnce(&ParamStore) -> anyhow::Result<Fwd> {
    move |_| Ok(Box::new(f))
}

#[test]
fn linear() {
    check_case("linear", |s| module(Linear::new(5, 3, s)?));
    check_case("linear_no_bias", |s| {
        module(LinearConfig::new(5, 3).bias(false).build(s)?)
    });
}

#[test]
fn batch_norm_train_and_eval_with_running_statistics() {
    check_case("batchnorm1d_train", |s| {
        module_t(BatchNorm::new_1d(5, s)?, true)
    });
    check_case("batchnorm1d_eval", |s| {
        module_t(BatchNorm::new_1d(5, s)?, false)
    });
    check_case("batchnorm1d_3d_train", |s| {
        module_t(BatchNorm::new_1d(3, s)?, true)
    });
    check_case("batchnorm2d_train", |s| {
        module_t(BatchNorm::new_2d(3, s)?, true)
    });
    check_case("batchnorm2d_eval", |s| {
        module_t(BatchNorm::new_2d(3, s)?, false)
    });
}

#[test]
fn layer_norm() {
    check_case("layernorm", |s| module(LayerNorm::new(&[5], s)?));
}

#[test]
fn conv_and_pooling() {
    check_case("conv2d", |s| {
        module(Conv2dConfig::new(2, 3, (3, 3)).padding(1).build(s)?)
    });
    check_case("conv2d_stride2_nobias", |s| {
        module(
            Conv2dConfig::new(2, 4, (3, 2))
                .stride(2)
                .bias(false)
                .build(s)?,
        )
    });
    check_case("maxpool2d", |_| module(MaxPool2d::new(2)));
    check_case("maxpool2d_k3s2", |_| module(MaxPool2d::new(3).stride(2)));
    check_case("avgpool2d", |_| module(AvgPool2d::new(2)));
}

#[test]
fn embedding_and_flatten() {
    check_case("embedding", |s| {
        let e = Embedding::new(7, 3, s)?;
        Ok(Box::new(move |i: &Inputs| Ok(e.forward(&i["ids"])?)))
    });
    check_case("flatten", |_| module(Flatten::default()));
}

#[test]
fn activations() {
    let cases: [(&str, Activation); 11] = [
        ("relu", Activation::Relu),
        ("leaky_relu", Activation::LeakyRelu(0.1)),
        ("elu", Activation::Elu(1.0)),
        ("gelu", Activation::Gelu),
        ("gelu_tanh", Activation::GeluTanh),
        ("silu", Activation::Silu),
        ("sigmoid", Activation::Sigmoid),
        ("tanh", Activation::Tanh),
        ("softmax", Activation::Softmax(-1)),
        ("log_softmax", Activation::LogSoftmax(-1)),
        ("softmax_dim0", Activation::Softmax(0)),
    ];
    for (name, a) in cases {
        check_case(&format!("act_{name}"), |_| module(a));
    }
    // The functional forms are the same functions.
    check_case("act_softmax", func(|i| Ok(act::softmax(&i["x"], 1)?)));
}

fn red(name: &str) -> Reduction {
    match name {
        "mean" => Reduction::Mean,
        "sum" => Reduction::Sum,
        _ => Reduction::None,
    }
}

#[test]
fn regression_losses() {
    for r in ["mean", "sum", "none"] {
        let rd = red(r);
        check_case(
            &format!("mse_{r}"),
            func(move |i| Ok(mse_loss(&i["x"], &i["y"], rd)?)),
        );
        check_case(
            &format!("l1_{r}"),
            func(move |i| Ok(l1_loss(&i["x"], &i["y"], rd)?)),
        );
        check_case(
            &format!("smooth_l1_{r}"),
            func(move |i| Ok(smooth_l1_loss(&i["x"], &i["y"], 0.5, rd)?)),
        );
        check_case(
            &format!("huber_{r}"),
            func(move |i| Ok(huber_loss(&i["x"], &i["y"], 0.7, rd)?)),
        );
    }
}

fn class_weight() -> Tensor {
    Tensor::new(&[0.5f64, 1.0, 2.0, 1.5], &taper_tensor::Device::Cpu).unwrap()
}

#[test]
fn classification_losses() {
    for r in ["mean", "sum", "none"] {
        let rd = red(r);
        check_case(
            &format!("ce_{r}"),
            func(move |i| {
                let ce = CrossEntropyLoss {
                    reduction: rd,
                    ..CrossEntropyLoss::new()
                };
                Ok(ce.forward(&i["x"], Target::Classes(&i["t"]))?)
            }),
        );
        check_case(
            &format!("ce_full_{r}"),
            func(move |i| {
                let ce = CrossEntropyLoss {
                    weight: Some(class_weight()),
                    ignore_index: Some(-100),
                    label_smoothing: 0.1,
                    reduction: rd,
                };
                Ok(ce.forward(&i["x"], Target::Classes(&i["t"]))?)
            }),
        );
        check_case(
            &format!("ce_probs_{r}"),
            func(move |i| {
                let ce = CrossEntropyLoss {
                    weight: Some(class_weight()),
                    label_smoothing: 0.2,
                    reduction: rd,
                    ..CrossEntropyLoss::new()
                };
                Ok(ce.forward(&i["x"], Target::Probs(&i["t"]))?)
            }),
        );
        check_case(
            &format!("nll_{r}"),
            func(move |i| {
                let nll = NllLoss {
                    weight: Some(class_weight()),
                    reduction: rd,
                    ..NllLoss::new()
                };
                Ok(nll.forward(&i["x"], &i["t"])?)
            }),
        );
        check_case(
            &format!("bce_logits_{r}"),
            func(move |i| {
                let pw = Tensor::new(&[1.0f64, 2.0, 0.5], &taper_tensor::Device::Cpu)?;
                Ok(binary_cross_entropy_with_logits(
                    &i["x"],
                    &i["t"],
                    Some(&pw),
                    None,
                    rd,
                )?)
            }),
        );
    }
    check_case("ce_extreme", func(|i| Ok(cross_entropy(&i["x"], &i["t"])?)));
}

#[test]
fn kl_divergence() {
    for (r, kr) in [
        ("mean", KlReduction::Mean),
        ("sum", KlReduction::Sum),
        ("none", KlReduction::None),
        ("batchmean", KlReduction::BatchMean),
    ] {
        check_case(
            &format!("kl_{r}"),
            func(move |i| Ok(kl_div(&i["x"], &i["t"], kr, false)?)),
        );
    }
    check_case(
        "kl_log_target",
        func(|i| Ok(kl_div(&i["x"], &i["t"], KlReduction::Sum, true)?)),
    );
}
