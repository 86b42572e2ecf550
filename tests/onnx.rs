//! ONNX export and import: every exportable layer kind checked by ONNX itself
//! (`check_model(full_check=True)`) and run by ONNX Runtime against Taper's outputs on two
//! batch sizes (`tests/onnx/check_ort.py`; skipped, saying so, without `onnx` and
//! `onnxruntime`); Taper reading its own exports back; PyTorch-exported MLP and CNN
//! imported, matched and fine-tuned; errors that name the layer, node and operator.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::{check_with_onnx_runtime, TmpDir};
use taper::nn::{
    Activation, FeedForwardActivation, LayerSpec, MultiheadAttentionConfig, RecurrentConfig,
    RecurrentKind, RmsNormConfig, RnnNonlinearity, Sequential, TransformerConfig,
};
use taper::tensor::{manual_seed, randn, DType, Device, ModuleT, ParamStore, Tensor};

/// One exported model and what it takes.
struct Case {
    name: &'static str,
    specs: Vec<LayerSpec>,
    /// The input shape without the batch.
    input: Vec<usize>,
    /// Token ids below this bound instead of floats.
    ids: Option<u32>,
}

fn case(name: &'static str, input: &[usize], specs: Vec<LayerSpec>) -> Case {
    Case {
        name,
        specs,
        input: input.to_vec(),
        ids: None,
    }
}

fn linear(i: usize, o: usize) -> LayerSpec {
    LayerSpec::Linear {
        in_features: i,
        out_features: o,
        bias: true,
    }
}

fn act(a: Activation) -> LayerSpec {
    LayerSpec::Activation { activation: a }
}

#[allow(clippy::too_many_arguments)]
fn conv(
    i: usize,
    o: usize,
    k: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    groups: usize,
    bias: bool,
) -> LayerSpec {
    LayerSpec::Conv2d {
        in_channels: i,
        out_channels: o,
        kernel: (k, k),
        stride,
        padding,
        dilation,
        groups,
        bias,
    }
}

fn batch_norm(rank: u8, n: usize, affine: bool) -> LayerSpec {
    LayerSpec::BatchNorm {
        rank,
        num_features: n,
        eps: 1e-5,
        momentum: 0.1,
        affine,
    }
}

fn flatten(start_dim: isize, end_dim: isize) -> LayerSpec {
    LayerSpec::Flatten { start_dim, end_dim }
}

/// The `mnist` example's MLP (`--hidden 128 64`) and CNN, as `examples/mnist/core.rs`
/// builds them.
fn mnist_models() -> Vec<Case> {
    let drop = LayerSpec::Dropout { p: 0.2 };
    let mlp = vec![
        flatten(1, -1),
        linear(784, 128),
        act(Activation::Relu),
        drop.clone(),
        linear(128, 64),
        act(Activation::Relu),
        drop.clone(),
        linear(64, 10),
    ];
    let cnn = vec![
        conv(1, 16, 5, 1, 2, 1, 1, true),
        act(Activation::Relu),
        LayerSpec::MaxPool2d {
            kernel: (2, 2),
            stride: (2, 2),
        },
        conv(16, 32, 5, 1, 2, 1, 1, true),
        act(Activation::Relu),
        LayerSpec::MaxPool2d {
            kernel: (2, 2),
            stride: (2, 2),
        },
        flatten(1, -1),
        linear(32 * 7 * 7, 128),
        act(Activation::Relu),
        drop,
        linear(128, 10),
    ];
    vec![
        case("mnist_mlp", &[1, 28, 28], mlp),
        case("mnist_cnn", &[1, 28, 28], cnn),
    ]
}

/// The layers with an ONNX operator of their own, or a few, that the importer reads back.
fn core_cases() -> Vec<Case> {
    let mut cases = mnist_models();
    cases.extend([
        case(
            "cnn_batch_norm",
            &[3, 12, 12],
            vec![
                conv(3, 8, 3, 1, 1, 1, 1, false),
                batch_norm(2, 8, true),
                act(Activation::Relu),
                LayerSpec::AvgPool2d {
                    kernel: (3, 3),
                    stride: (2, 2),
                },
                conv(8, 8, 3, 2, 1, 1, 4, true),
                batch_norm(2, 8, false),
                LayerSpec::MaxPool2d {
                    kernel: (2, 1),
                    stride: (1, 1),
                },
                flatten(1, -1),
                linear(8 * 2 * 3, 16),
                batch_norm(1, 16, true),
                act(Activation::Tanh),
                linear(16, 3),
                act(Activation::LogSoftmax(1)),
            ],
        ),
        case(
            "conv_stride_dilation_groups",
            &[4, 11, 13],
            vec![
                conv(4, 6, 3, 2, 2, 2, 2, true),
                conv(6, 6, 1, 1, 0, 1, 6, false),
                conv(6, 4, 2, 1, 1, 1, 1, true),
            ],
        ),
        case(
            "linear_on_sequences",
            &[5, 6],
            vec![
                linear(6, 8),
                LayerSpec::Linear {
                    in_features: 8,
                    out_features: 4,
                    bias: false,
                },
                batch_norm(1, 5, true),
                LayerSpec::LayerNorm {
                    normalized_shape: vec![4],
                    eps: 1e-5,
                    elementwise_affine: true,
                    bias: true,
                },
                LayerSpec::LayerNorm {
                    normalized_shape: vec![5, 4],
                    eps: 1e-3,
                    elementwise_affine: true,
                    bias: false,
                },
                LayerSpec::LayerNorm {
                    normalized_shape: vec![4],
                    eps: 1e-6,
                    elementwise_affine: false,
                    bias: false,
                },
                flatten(1, 2),
            ],
        ),
        case(
            "activations",
            &[7],
            [
                Activation::Relu,
                Activation::LeakyRelu(0.2),
                Activation::Elu(0.7),
                Activation::Gelu,
                Activation::GeluTanh,
                Activation::Silu,
                Activation::Sigmoid,
                Activation::Tanh,
                Activation::Softmax(-1),
                Activation::LogSoftmax(1),
            ]
            .into_iter()
            .flat_map(|a| [linear(7, 7), act(a)])
            .collect(),
        ),
        // Each activation's own output, not only through the chain above.
        case("gelu_last", &[7], vec![linear(7, 7), act(Activation::Gelu)]),
        case(
            "gelu_tanh_last",
            &[7],
            vec![linear(7, 7), act(Activation::GeluTanh)],
        ),
        case(
            "elu_last",
            &[7],
            vec![linear(7, 7), act(Activation::Elu(1.5))],
        ),
        case(
            "flatten_ranges_and_nesting",
            &[2, 3, 4, 5],
            vec![
                flatten(2, 3),
                LayerSpec::Sequential {
                    layers: vec![flatten(1, -2), LayerSpec::Dropout { p: 0.5 }, linear(5, 3)],
                },
                flatten(1, -1),
            ],
        ),
        Case {
            name: "embedding",
            specs: vec![
                LayerSpec::Embedding {
                    num_embeddings: 20,
                    embedding_dim: 6,
                },
                LayerSpec::Sequential {
                    layers: vec![linear(6, 4), act(Activation::Silu)],
                },
                flatten(1, -1),
            ],
            input: vec![9],
            ids: Some(20),
        },
    ]);
    cases
}

/// Layers written as several ONNX operators: positions, RMSNorm, attention, transformers,
/// recurrences.
fn sequence_cases() -> Vec<Case> {
    let tc = TransformerConfig::new(8, 2)
        .dim_feedforward(16)
        .batch_first(true);
    let rc = |kind: &str| {
        let c = RecurrentConfig::new(6, 5).batch_first(true);
        match kind {
            "deep" => RecurrentConfig { num_layers: 2, ..c },
            "bi" => RecurrentConfig {
                bidirectional: true,
                ..c
            },
            "both" => RecurrentConfig {
                num_layers: 2,
                bidirectional: true,
                ..c
            },
            _ => c,
        }
    };
    let recurrent = |name, recurrence: RecurrentKind, config: RecurrentConfig| {
        let hidden = config.hidden_size * if config.bidirectional { 2 } else { 1 };
        case(
            name,
            &[7, 6],
            vec![
                LayerSpec::Recurrent { recurrence, config },
                linear(hidden, 3),
            ],
        )
    };
    let mut cases = vec![
        case(
            "positions_and_rms_norm",
            &[5, 8],
            vec![
                LayerSpec::PositionalEmbedding { max_len: 9, dim: 8 },
                LayerSpec::SinusoidalEncoding {
                    max_len: 12,
                    dim: 8,
                },
                LayerSpec::RmsNorm {
                    config: RmsNormConfig::new(&[8]),
                },
                LayerSpec::RmsNorm {
                    config: RmsNormConfig {
                        eps: Some(1e-3),
                        elementwise_affine: false,
                        ..RmsNormConfig::new(&[5, 8])
                    },
                },
            ],
        ),
        case(
            "multihead_attention",
            &[5, 8],
            vec![
                LayerSpec::MultiheadAttention {
                    config: MultiheadAttentionConfig::new(8, 2).batch_first(true),
                },
                LayerSpec::MultiheadAttention {
                    config: MultiheadAttentionConfig::new(8, 4)
                        .batch_first(true)
                        .bias(false),
                },
            ],
        ),
        case(
            "transformer_layers",
            &[5, 8],
            vec![
                LayerSpec::TransformerEncoderLayer { config: tc },
                LayerSpec::TransformerEncoderLayer {
                    config: TransformerConfig {
                        norm_first: true,
                        activation: FeedForwardActivation::Gelu,
                        ..tc
                    },
                },
                LayerSpec::TransformerDecoderLayer { config: tc },
                LayerSpec::TransformerDecoderLayer {
                    config: TransformerConfig {
                        norm_first: true,
                        ..tc
                    },
                },
                LayerSpec::TransformerEncoder {
                    config: tc,
                    num_layers: 2,
                    final_norm: true,
                },
            ],
        ),
        recurrent("lstm", RecurrentKind::Lstm, rc("one")),
        recurrent("lstm_deep_bidirectional", RecurrentKind::Lstm, rc("both")),
        recurrent("gru_bidirectional", RecurrentKind::Gru, rc("bi")),
        recurrent("gru_deep", RecurrentKind::Gru, rc("deep")),
        recurrent(
            "rnn_tanh",
            RecurrentKind::Rnn(RnnNonlinearity::Tanh),
            rc("bi"),
        ),
        recurrent(
            "rnn_relu",
            RecurrentKind::Rnn(RnnNonlinearity::Relu),
            rc("deep"),
        ),
    ];
    // The sequence-first layout: batch is dimension 1 of the input, so the export fixes it.
    let mut seq_first = case(
        "lstm_sequence_first",
        &[2, 6],
        vec![LayerSpec::Recurrent {
            recurrence: RecurrentKind::Lstm,
            config: RecurrentConfig::new(6, 5),
        }],
    );
    seq_first.input = vec![2, 6];
    cases.push(seq_first);
    cases
}

/// Builds a case's model with its weights and, where it has BatchNorm, running statistics
/// moved away from 0 and 1 by a few training-mode passes.
fn build(case: &Case) -> (Sequential, ParamStore) {
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let model = Sequential::from_specs(&case.specs, &store).unwrap();
    if case.ids.is_none() {
        for _ in 0..3 {
            let x = example(case, 8).affine(2.0, 0.5).unwrap();
            model.forward_t(&x, true).unwrap();
        }
    }
    (model, store)
}

/// A random input of `batch` examples.
fn example(case: &Case, batch: usize) -> Tensor {
    let mut dims = vec![batch];
    dims.extend(&case.input);
    match case.ids {
        Some(n) => {
            let x = randn(dims.as_slice(), 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
            let ids: Vec<u32> = x
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| (v.abs() * 7.0) as u32 % n)
                .collect();
            Tensor::from_vec(ids, dims.as_slice(), &Device::Cpu).unwrap()
        }
        None => randn(dims.as_slice(), 0.0, 1.0, DType::F32, &Device::Cpu).unwrap(),
    }
}

/// Exports a case to `dir/NAME.onnx` with inputs of two batch sizes and Taper's outputs in
/// `dir/NAME.safetensors`; returns the model and the inputs and outputs.
fn export(dir: &Path, case: &Case) -> (Sequential, Vec<(Tensor, Tensor)>) {
    let (model, _store) = build(case);
    model
        .export_onnx(dir.join(format!("{}.onnx", case.name)), &case.input)
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let mut io = HashMap::new();
    let mut pairs = Vec::new();
    for (k, batch) in [2usize, 5].into_iter().enumerate() {
        // The sequence-first case keeps its batch fixed: vary the sequence instead.
        let x = example(case, batch);
        let y = model.forward_t(&x, false).unwrap();
        io.insert(format!("x{k}"), x.clone());
        io.insert(format!("y{k}"), y.clone());
        pairs.push((x, y));
    }
    taper::tensor::candle::safetensors::save(&io, dir.join(format!("{}.safetensors", case.name)))
        .unwrap();
    (model, pairs)
}

/// Exports `cases` into a fresh directory and checks them all with ONNX Runtime.
fn export_and_run(name: &str, cases: Vec<Case>) {
    let dir = TmpDir::fresh("onnx", name);
    std::fs::create_dir_all(&dir).unwrap();
    for c in &cases {
        export(&dir, c);
    }
    check_with_onnx_runtime(&dir, cases.len());
}

#[test]
fn onnx_runtime_runs_the_mnist_models_and_every_single_operator_layer_as_taper_does() {
    manual_seed(11);
    export_and_run("ort-core", core_cases());
}

#[test]
fn onnx_runtime_runs_the_sequence_layers_as_taper_does() {
    manual_seed(13);
    export_and_run("ort-sequence", sequence_cases());
}

#[test]
fn taper_reads_its_own_exports_back_with_the_same_outputs() {
    manual_seed(12);
    let dir = TmpDir::fresh("onnx", "roundtrip");
    std::fs::create_dir_all(&dir).unwrap();
    for c in core_cases() {
        let (_, pairs) = export(&dir, &c);
        let (back, store) = Sequential::import_onnx(
            dir.join(format!("{}.onnx", c.name)),
            &Device::Cpu,
            DType::F32,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert!(
            !store.trainable().is_empty() || c.name == "none",
            "{}",
            c.name
        );
        for (x, y) in pairs {
            let got = back.forward_t(&x, false).unwrap();
            let diff = (got - &y).unwrap().abs().unwrap().max_all().unwrap();
            let diff = diff.to_scalar::<f32>().unwrap();
            assert!(
                diff <= 1e-5,
                "{}: re-imported model differs by {diff}",
                c.name
            );
        }
        // The re-imported model is a model of Taper's layers: it has a model file.
        back.spec().unwrap();
    }
}

/// Loads `torch_onnx_io.safetensors`.
fn torch_io() -> HashMap<String, Tensor> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_onnx_io.safetensors");
    taper::tensor::candle::safetensors::load(path, &Device::Cpu).unwrap()
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/torch_onnx_{name}.onnx"))
}

#[test]
fn pytorch_exported_mlp_and_cnns_import_and_give_pytorchs_outputs() {
    let io = torch_io();
    for name in ["mlp", "cnn", "cnn_legacy"] {
        let (model, _) = Sequential::import_onnx(fixture(name), &Device::Cpu, DType::F32)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = model.forward_t(&io[&format!("{name}.x")], false).unwrap();
        let want = &io[&format!("{name}.y")];
        let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
        let diff = diff.to_scalar::<f32>().unwrap();
        assert!(diff <= 1e-5, "{name}: Taper differs from PyTorch by {diff}");
        println!(
            "{name}: {} layers, max |Taper - PyTorch| = {diff:.2e}",
            model.len()
        );
    }
    // The legacy export kept BatchNormalization and GELU: both came back as layers.
    let (cnn, _) =
        Sequential::import_onnx(fixture("cnn_legacy"), &Device::Cpu, DType::F32).unwrap();
    let kinds: Vec<String> = match cnn.spec().unwrap() {
        LayerSpec::Sequential { layers } => layers.iter().map(|l| l.kind().to_string()).collect(),
        _ => unreachable!(),
    };
    assert!(kinds.contains(&"BatchNorm".to_string()), "{kinds:?}");
    assert!(
        kinds.iter().filter(|k| *k == "Activation").count() >= 3,
        "{kinds:?}"
    );
}

#[test]
fn an_imported_pytorch_cnn_fine_tunes() {
    use taper::optim::{Optimizer, Sgd};
    manual_seed(5);
    let (model, store) = Sequential::import_onnx(fixture("cnn"), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(store.trainable().len(), 6, "{:?}", store.names());
    let x = randn((16, 1, 28, 28), 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
    let y = Tensor::from_vec((0..16u32).map(|i| i % 10).collect(), 16, &Device::Cpu).unwrap();
    let mut opt = Optimizer::new(Sgd::new(0.1).momentum(0.9), &store).unwrap();
    let loss = |m: &Sequential| {
        taper::nn::NllLoss::new()
            .forward(&m.forward_t(&x, true).unwrap(), &y)
            .unwrap()
    };
    let first = loss(&model).to_scalar::<f32>().unwrap();
    for _ in 0..20 {
        let l = loss(&model);
        opt.backward_step(&l).unwrap();
    }
    let last = loss(&model).to_scalar::<f32>().unwrap();
    assert!(
        last < 0.5 * first,
        "fine-tuning did not fit: {first} -> {last}"
    );
}

#[test]
fn a_layer_without_an_onnx_form_is_an_error_naming_its_path() {
    #[derive(Debug)]
    struct Mine;
    impl taper::tensor::Module for Mine {
        fn forward(&self, x: &Tensor) -> taper::tensor::candle::Result<Tensor> {
            Ok(x.clone())
        }
    }
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let model = Sequential::new(&store)
        .append_with(|s| taper::nn::Linear::new(4, 4, s))
        .unwrap()
        .append(Mine);
    let err = model.to_onnx(&[4]).unwrap_err().to_string();
    assert!(err.contains("layers[1]") && err.contains("Mine"), "{err}");

    // A shape that does not fit names the layer too.
    let model =
        Sequential::from_specs(&[flatten(1, -1), linear(10, 2)], &store.sub("other")).unwrap();
    let err = model.to_onnx(&[3, 3]).unwrap_err().to_string();
    assert!(
        err.contains("layers[1] (Linear)") && err.contains("9"),
        "{err}"
    );
}

#[test]
fn unsupported_operators_and_branching_graphs_are_errors_naming_the_node() {
    use prost::Message;
    use taper::nn::onnx::proto::ModelProto;
    // An operator Taper has no layer for: PyTorch's MLP with its ReLU made a HardSwish.
    let bytes = std::fs::read(fixture("mlp")).unwrap();
    let mut m = ModelProto::decode(bytes.as_slice()).unwrap();
    let relu = m
        .graph
        .as_mut()
        .unwrap()
        .node
        .iter_mut()
        .find(|n| n.op_type == "Relu")
        .unwrap();
    relu.op_type = "HardSwish".into();
    let name = relu.name.clone();
    let err = Sequential::from_onnx_bytes(&m.encode_to_vec(), &Device::Cpu, DType::F32)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("node `{name}` (HardSwish)"))
            && err.contains("operator `HardSwish` is not supported"),
        "{err}"
    );

    // A graph that is not a chain: attention's projections read the weights first.
    let dir = TmpDir::fresh("onnx", "unsupported");
    std::fs::create_dir_all(&dir).unwrap();
    let case = case(
        "attention",
        &[5, 8],
        vec![LayerSpec::MultiheadAttention {
            config: MultiheadAttentionConfig::new(8, 2).batch_first(true),
        }],
    );
    export(&dir, &case);
    let err = Sequential::import_onnx(dir.join("attention.onnx"), &Device::Cpu, DType::F32)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("attention.onnx") && err.contains("node `"),
        "{err}"
    );
    assert!(
        err.contains("only a chain of layers can be imported"),
        "{err}"
    );
}

#[test]
fn constant_nodes_are_read_as_the_initializers_they_stand_for() {
    use prost::Message;
    use taper::nn::onnx::proto::{
        attribute_proto::AttributeType, AttributeProto, ModelProto, NodeProto,
    };
    // PyTorch's MLP with its Reshape shape moved from an initializer to a Constant node.
    let bytes = std::fs::read(fixture("mlp")).unwrap();
    let mut m = ModelProto::decode(bytes.as_slice()).unwrap();
    let g = m.graph.as_mut().unwrap();
    let k = g.initializer.iter().position(|t| t.data_type == 7).unwrap();
    let shape = g.initializer.remove(k);
    let constant = |kind: AttributeType| NodeProto {
        op_type: "Constant".into(),
        output: vec![shape.name.clone()],
        attribute: vec![AttributeProto {
            name: "value_ints".into(),
            r#type: kind as i32,
            ints: vec![-1, 784],
            ..Default::default()
        }],
        ..Default::default()
    };
    g.node.insert(0, constant(AttributeType::Ints));
    let (model, _) =
        Sequential::from_onnx_bytes(&m.encode_to_vec(), &Device::Cpu, DType::F32).unwrap();
    let io = torch_io();
    let diff = (model.forward_t(&io["mlp.x"], false).unwrap() - &io["mlp.y"]).unwrap();
    assert!(
        diff.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            <= 1e-5
    );
    // The same attribute with the wrong type is an error naming the node.
    m.graph.as_mut().unwrap().node[0] = constant(AttributeType::Floats);
    let err = Sequential::from_onnx_bytes(&m.encode_to_vec(), &Device::Cpu, DType::F32)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("(Constant)") && err.contains("value_ints"),
        "{err}"
    );
}
