//! Structure-aware fuzzing of the ONNX importer, in a child process with a memory cap.
//!
//! Random bytes die in the protobuf decoder. These mutations decode a good model (Taper's
//! export of a small CNN with BatchNorm, GELU, SiLU and LayerNorm, and the PyTorch-exported
//! CNNs of `tests/fixtures`), edit its messages, and encode it again, so that they reach the
//! validator and the importer: tensor dimensions, types and data (negative, huge, zero,
//! truncated, moved between fields, external), node operators, attributes (values, types,
//! absence), inputs and outputs (unknown, repeated, swapped), node order, graph inputs and
//! outputs, and the opset; plus truncation and byte flips of the encoded file. For each:
//!
//! - the import gives `Ok` or an error, never a panic, abort or unbounded allocation;
//! - a model it accepts runs on an input of its declared shape (or returns an error).
//!
//! `TAPER_FUZZ_CASES` sets the cases per base model (default 3,000). The child runs with a
//! 2 GiB address-space limit, so a file that makes the importer allocate by what it claims
//! fails the test instead of the machine.

mod common;

use std::path::Path;

use prost::Message;
use rand::seq::{IndexedMutRandom, IndexedRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use taper::nn::onnx::proto::{attribute_proto::AttributeType, AttributeProto, ModelProto};
use taper::nn::{Activation, LayerSpec, Sequential};
use taper::prelude::*;

use common::run_capped_fuzz_child;

const CHILD: &str = "TAPER_FUZZ_ONNX_CHILD";

/// Operators the mutations swap in: supported ones and a few that are not.
const OPS: &[&str] = &[
    "Gemm",
    "MatMul",
    "Add",
    "Conv",
    "MaxPool",
    "AveragePool",
    "BatchNormalization",
    "LayerNormalization",
    "Flatten",
    "Reshape",
    "Gather",
    "Dropout",
    "Identity",
    "Relu",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "LogSoftmax",
    "Gelu",
    "Erf",
    "Mul",
    "Div",
    "Pow",
    "Transpose",
    "Constant",
    "LSTM",
    "Loop",
    "If",
    "Resize",
    "",
];

/// Numbers that break assumptions.
fn weird_int(rng: &mut ChaCha8Rng) -> i64 {
    *[
        -1,
        0,
        1,
        2,
        3,
        7,
        -(1 << 40),
        1 << 40,
        i64::MAX,
        i64::MIN,
        1 << 31,
        65_537,
        rng.random_range(-100..100),
    ]
    .choose(rng)
    .unwrap()
}

/// Taper's export of a small CNN that uses most importable operators.
fn taper_model() -> Vec<u8> {
    manual_seed(4);
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let specs = vec![
        LayerSpec::Conv2d {
            in_channels: 2,
            out_channels: 4,
            kernel: (3, 3),
            stride: 1,
            padding: 1,
            dilation: 1,
            groups: 2,
            bias: true,
        },
        LayerSpec::BatchNorm {
            rank: 2,
            num_features: 4,
            eps: 1e-5,
            momentum: 0.1,
            affine: true,
        },
        LayerSpec::Activation {
            activation: Activation::Gelu,
        },
        LayerSpec::MaxPool2d {
            kernel: (2, 2),
            stride: (2, 2),
        },
        LayerSpec::Flatten {
            start_dim: 1,
            end_dim: -1,
        },
        LayerSpec::Linear {
            in_features: 36,
            out_features: 8,
            bias: true,
        },
        LayerSpec::LayerNorm {
            normalized_shape: vec![8],
            eps: 1e-5,
            elementwise_affine: true,
            bias: true,
        },
        LayerSpec::Activation {
            activation: Activation::Silu,
        },
        LayerSpec::Dropout { p: 0.1 },
        LayerSpec::Linear {
            in_features: 8,
            out_features: 3,
            bias: true,
        },
        LayerSpec::Activation {
            activation: Activation::LogSoftmax(1),
        },
    ];
    let model = Sequential::from_specs(&specs, &store).unwrap();
    model.to_onnx(&[2, 6, 6]).unwrap()
}

/// One structured mutation of `m`.
fn mutate(m: &mut ModelProto, rng: &mut ChaCha8Rng) {
    let Some(g) = m.graph.as_mut() else {
        return;
    };
    match rng.random_range(0..14) {
        0 if !g.initializer.is_empty() => {
            let t = g.initializer.choose_mut(rng).unwrap();
            let k = rng.random_range(0..t.dims.len().max(1));
            match t.dims.get_mut(k) {
                Some(d) => *d = weird_int(rng),
                None => t.dims.push(weird_int(rng)),
            }
        }
        1 if !g.initializer.is_empty() => {
            let t = g.initializer.choose_mut(rng).unwrap();
            match rng.random_range(0..4) {
                0 => {
                    let n = rng.random_range(0..=t.raw_data.len());
                    t.raw_data.truncate(n)
                }
                1 => t.raw_data.extend([0u8; 4]),
                2 => {
                    // The same values as float_data, or both fields.
                    t.float_data = t
                        .raw_data
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect();
                    if rng.random_bool(0.5) {
                        t.raw_data.clear();
                    }
                }
                _ => t.raw_data.iter_mut().for_each(|b| *b = 0xff), // NaNs
            }
        }
        2 if !g.initializer.is_empty() => {
            let t = g.initializer.choose_mut(rng).unwrap();
            match rng.random_range(0..3) {
                0 => t.data_type = *[0, 2, 3, 6, 7, 9, 10, 11, 16, 99].choose(rng).unwrap(),
                1 => t.data_location = 1,
                _ => {
                    t.name = g
                        .node
                        .choose(rng)
                        .map(|n| n.output[0].clone())
                        .unwrap_or_default()
                }
            }
        }
        3 if !g.node.is_empty() => {
            let n = g.node.choose_mut(rng).unwrap();
            n.op_type = OPS.choose(rng).unwrap().to_string();
        }
        4 if !g.node.is_empty() => {
            let n = g.node.choose_mut(rng).unwrap();
            match n.attribute.choose_mut(rng) {
                Some(a) if rng.random_bool(0.7) => match rng.random_range(0..4) {
                    0 => {
                        a.ints = (0..rng.random_range(0..6))
                            .map(|_| weird_int(rng))
                            .collect()
                    }
                    1 => a.i = weird_int(rng),
                    2 => {
                        a.f = *[f32::NAN, -1.0, 0.0, 1e30, f32::INFINITY]
                            .choose(rng)
                            .unwrap()
                    }
                    _ => a.r#type = rng.random_range(0..15),
                },
                Some(_) => {
                    let k = rng.random_range(0..n.attribute.len());
                    n.attribute.remove(k);
                }
                None => n.attribute.push(AttributeProto {
                    name: ["axis", "pads", "strides", "group", "transB", "alpha"]
                        .choose(rng)
                        .unwrap()
                        .to_string(),
                    r#type: AttributeType::Int as i32,
                    i: weird_int(rng),
                    ..Default::default()
                }),
            }
        }
        5 if !g.node.is_empty() => {
            let names: Vec<String> = g
                .node
                .iter()
                .flat_map(|n| n.output.clone())
                .chain(g.initializer.iter().map(|t| t.name.clone()))
                .chain(["missing".to_string(), String::new(), "input".to_string()])
                .collect();
            let n = g.node.choose_mut(rng).unwrap();
            let pick = names.choose(rng).unwrap().clone();
            match rng.random_range(0..3) {
                0 if !n.input.is_empty() => {
                    let k = rng.random_range(0..n.input.len());
                    n.input[k] = pick;
                }
                1 => n.input.push(pick),
                _ => n.output[0] = pick,
            }
        }
        6 if g.node.len() > 1 => {
            let (a, b) = (
                rng.random_range(0..g.node.len()),
                rng.random_range(0..g.node.len()),
            );
            g.node.swap(a, b);
        }
        7 if !g.node.is_empty() => {
            let k = rng.random_range(0..g.node.len());
            if rng.random_bool(0.5) {
                g.node.remove(k);
            } else {
                let n = g.node[k].clone();
                g.node.insert(k, n);
            }
        }
        8 => {
            if let Some(i) = g.input.first_mut() {
                use taper::nn::onnx::proto::tensor_shape_proto::dimension::Value as D;
                use taper::nn::onnx::proto::type_proto::Value as T;
                if let Some(T::TensorType(t)) = i.r#type.as_mut().and_then(|t| t.value.as_mut()) {
                    match rng.random_range(0..3) {
                        0 => t.elem_type = rng.random_range(0..17),
                        1 => {
                            if let Some(s) = t.shape.as_mut() {
                                if let Some(d) = s.dim.choose_mut(rng) {
                                    d.value = Some(D::DimValue(weird_int(rng)));
                                }
                            }
                        }
                        _ => t.shape = None,
                    }
                }
            }
        }
        9 => match rng.random_range(0..3) {
            0 => g.input.clear(),
            1 => {
                let extra = g.output[0].clone();
                g.output.push(extra)
            }
            _ => g.output[0].name = "nowhere".into(),
        },
        10 => m.opset_import[0].version = weird_int(rng),
        11 => m.graph = None,
        _ => {}
    }
}

/// The mutated bytes of `base`: structured edits, re-encoded, sometimes also truncated or
/// flipped.
fn mutated(base: &ModelProto, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut m = base.clone();
    for _ in 0..rng.random_range(1..=3) {
        mutate(&mut m, rng);
    }
    let mut bytes = m.encode_to_vec();
    match rng.random_range(0..10) {
        0 => bytes.truncate(rng.random_range(0..=bytes.len())),
        1 if !bytes.is_empty() => {
            for _ in 0..rng.random_range(1..8) {
                let k = rng.random_range(0..bytes.len());
                bytes[k] ^= 1 << rng.random_range(0..8);
            }
        }
        _ => {}
    }
    bytes
}

/// Runs the cases over each base model; returns a line per base.
fn fuzz(cases: usize) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let bases = [
        ("taper_cnn", taper_model()),
        (
            "torch_cnn",
            std::fs::read(root.join("torch_onnx_cnn.onnx")).unwrap(),
        ),
        (
            "torch_cnn_legacy",
            std::fs::read(root.join("torch_onnx_cnn_legacy.onnx")).unwrap(),
        ),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(20261204);
    let mut lines = Vec::new();
    for (name, bytes) in bases {
        let base = ModelProto::decode(bytes.as_slice()).unwrap();
        // The unmutated model imports.
        Sequential::from_onnx_bytes(&bytes, &Device::Cpu, DType::F32).unwrap();
        let (mut errors, mut accepted) = (0usize, 0usize);
        for i in 0..cases {
            let bytes = mutated(&base, &mut rng);
            match Sequential::from_onnx_bytes(&bytes, &Device::Cpu, DType::F32) {
                Err(e) => {
                    errors += 1;
                    assert!(!e.to_string().is_empty());
                }
                Ok((model, _)) => {
                    accepted += 1;
                    // An accepted model runs on an input of its declared shape, or says why not.
                    let m = ModelProto::decode(bytes.as_slice()).unwrap();
                    let _ = run_declared(&model, &m);
                    let _ = i;
                }
            }
        }
        assert!(
            errors > cases / 2,
            "{name}: too few mutations were caught: {errors}"
        );
        lines.push(format!(
            "{name}: {cases} structured mutations: {errors} errors, {accepted} accepted, 0 panics"
        ));
    }
    lines
}

/// Runs `model` on zeros of the graph input's declared shape (batch 2).
fn run_declared(model: &Sequential, m: &ModelProto) -> Option<()> {
    use taper::nn::onnx::proto::tensor_shape_proto::dimension::Value as D;
    use taper::nn::onnx::proto::type_proto::Value as T;
    let input = m.graph.as_ref()?.input.first()?;
    let Some(T::TensorType(t)) = input.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    let mut dims = vec![2usize];
    for d in t.shape.as_ref()?.dim.iter().skip(1) {
        match d.value {
            Some(D::DimValue(v)) if v > 0 && v < 4096 => dims.push(v as usize),
            _ => return None,
        }
    }
    let x = Tensor::zeros(dims, DType::F32, &Device::Cpu).ok()?;
    model.forward_t(&x, false).ok().map(|_| ())
}

#[test]
fn structured_mutations_of_onnx_files_never_panic_or_allocate_unbounded() {
    if std::env::var(CHILD).is_ok() {
        let cases = std::env::var("TAPER_FUZZ_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3000);
        for line in fuzz(cases) {
            println!("{line}");
        }
        println!("FUZZ-OK");
        return;
    }
    run_capped_fuzz_child(
        "structured_mutations_of_onnx_files_never_panic_or_allocate_unbounded",
        CHILD,
        std::ffi::OsStr::new("1"),
    );
}
