//! ONNX export: [`Sequential::export_onnx`] writes a model of Taper's layers as an ONNX
//! graph (opset [`ONNX_OPSET`]) whose initializers carry the weights under their PyTorch
//! state-dict names.
//!
//! The export walks the model's [`LayerSpec`]s with the shape each layer receives (traced
//! from the input shape, batch 1), and each layer kind writes its nodes: one ONNX operator
//! where ONNX has it (Gemm, Conv, MaxPool, BatchNormalization, LayerNormalization, Gather,
//! LSTM, GRU, RNN), else the operators it is made of (exact GELU as `Erf`, RMSNorm,
//! attention). The sequence layers are in [`crate::onnx::export_sequence`].

use std::path::Path;

use candle_core::Tensor;
use prost::Message;
use taper_tensor::{write_atomic, ParamStore};

use crate::error::{Error, Result};
use crate::layers::activation::Activation;
use crate::layers::sequential::Sequential;
use crate::layers::spec::LayerSpec;
use crate::onnx::export_sequence;
use crate::onnx::graph::{attr, Attr, GraphBuilder};
use crate::onnx::proto::{
    tensor_proto::DataType, tensor_shape_proto::dimension, type_proto, GraphProto, ModelProto,
    OperatorSetIdProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

/// The ONNX opset Taper writes: 17, which ONNX Runtime (1.14 and later, 1.31 included),
/// TensorRT 8.6+, OpenVINO and onnxruntime-web all run. It is the first with
/// `LayerNormalization`; GELU, which has its own operator only from opset 20, is written as
/// `Erf` (exact) or `Tanh` (the tanh form).
pub const ONNX_OPSET: i64 = 17;

/// The ONNX IR version that goes with opset 17.
const IR_VERSION: i64 = 8;

/// A value in the graph being written: its name and its traced dimensions (batch 1).
#[derive(Debug, Clone)]
pub(crate) struct Value {
    pub(crate) name: String,
    pub(crate) dims: Vec<usize>,
}

/// What every layer's writer gets: the graph, the layer's parameters, and its path.
pub(crate) struct Site<'a> {
    pub(crate) g: &'a mut GraphBuilder,
    /// The layer's store view (its parameters are `weight`, `bias`, …).
    pub(crate) store: ParamStore,
    /// `/2/0`: the layer's place in the model, for node names and errors.
    pub(crate) path: String,
}

impl Site<'_> {
    /// The site of the sub-module `name` (`norm1`, `layers.0`): its parameters and nodes
    /// are named under it.
    pub(crate) fn sub(&mut self, name: &str) -> Site<'_> {
        Site {
            g: self.g,
            store: self.store.sub(name),
            path: format!("{}/{name}", self.path),
        }
    }

    /// An error naming this layer.
    pub(crate) fn error(&self, kind: &str, reason: impl Into<String>) -> Error {
        Error::Onnx {
            at: format!("layer {} ({kind})", display_path(&self.path)),
            reason: reason.into(),
        }
    }

    /// The parameter or buffer `name` of this layer, as a float32 initializer under its
    /// state-dict name.
    pub(crate) fn param(&mut self, name: &str) -> Result<String> {
        let var = self.store.var(name)?;
        let full = self.store.full_name(name);
        self.g.weight(&full, var.as_tensor())
    }

    /// The parameter `name` as a tensor (for writers that rearrange it).
    pub(crate) fn tensor(&self, name: &str) -> Result<Tensor> {
        Ok(self.store.var(name)?.as_tensor().clone())
    }

    /// A node of this layer with one output.
    pub(crate) fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<Attr1>) -> String {
        let attrs = attrs.into_iter().map(|(n, v)| attr(n, v)).collect();
        self.g.node(&self.path, op, inputs, attrs)
    }

    /// A scalar float32 constant.
    pub(crate) fn scalar(&mut self, name: &str, v: f32) -> String {
        self.g.constant(&format!("{}/{name}", self.path), &[], &[v])
    }
}

/// One attribute, as writers list them.
pub(crate) type Attr1 = (&'static str, Attr);

/// `/2/0` as errors show it (`layers[2].layers[0]`, as model-file errors do).
fn display_path(path: &str) -> String {
    // Only the indices of nested `Sequential`s: `/2/0/norm1` is inside layers[2].layers[0].
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty())
        .take_while(|p| p.parse::<usize>().is_ok())
        .collect();
    if parts.is_empty() {
        return "model".into();
    }
    parts
        .iter()
        .map(|p| format!("layers[{p}]"))
        .collect::<Vec<_>>()
        .join(".")
}

impl Sequential {
    /// Writes the model to `path` as ONNX (opset [`ONNX_OPSET`]), atomically, for inputs of
    /// shape `input_shape` without the batch dimension (`&[1, 28, 28]`). The graph's input is
    /// `input` and its output `output`; the batch dimension (the first) is dynamic, named
    /// `batch`, the others fixed. Weights are float32 initializers named as in the state
    /// dict (`0.weight`); BatchNorm is written in evaluation form with its running
    /// statistics, and dropout as `Identity`. A model that starts with an `Embedding` takes
    /// int64 token ids.
    ///
    /// Every kind [`LayerSpec`] knows is exported, except registered custom layers; a layer
    /// that cannot be exported is an error naming its path (`layers[2].layers[0]`).
    ///
    /// ```
    /// use taper_nn::{Activation, Flatten, Linear, Sequential};
    /// use taper_tensor::{DType, Device, ParamStore};
    /// let store = ParamStore::new(&Device::Cpu, DType::F32);
    /// let model = Sequential::new(&store)
    ///     .append(Flatten::default())
    ///     .append_with(|s| Linear::new(784, 64, s))?
    ///     .append(Activation::Relu)
    ///     .append_with(|s| Linear::new(64, 10, s))?;
    /// let path = std::env::temp_dir().join(format!("taper-doc-{}.onnx", std::process::id()));
    /// model.export_onnx(&path, &[1, 28, 28])?;
    /// // Taper reads it back (ONNX Runtime, TensorRT or OpenVINO run it as well).
    /// let (back, _) = Sequential::import_onnx(&path, &Device::Cpu, DType::F32)?;
    /// assert_eq!(back.len(), 4);
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn export_onnx(&self, path: impl AsRef<Path>, input_shape: &[usize]) -> Result<()> {
        let bytes = self.to_onnx(input_shape)?;
        write_atomic(path.as_ref(), &bytes)?;
        Ok(())
    }

    /// The ONNX file [`Sequential::export_onnx`] writes, as bytes.
    pub fn to_onnx(&self, input_shape: &[usize]) -> Result<Vec<u8>> {
        Ok(self.onnx_model(input_shape)?.encode_to_vec())
    }

    /// The model as an ONNX `ModelProto`.
    pub(crate) fn onnx_model(&self, input_shape: &[usize]) -> Result<ModelProto> {
        let layers = self.exportable_specs()?;
        let ids = starts_with_embedding(&layers);
        let mut g = GraphBuilder::default();
        g.reserve("input");
        let mut dims = vec![1];
        dims.extend(input_shape);
        let input = Value {
            name: "input".into(),
            dims: dims.clone(),
        };
        let mut out = write_chain(&mut g, &layers, &self.store, "", input)?;
        if out.name == "input" {
            out.name = g.node("", "Identity", &["input"], vec![]);
        }
        g.rename_output(&out.name, "output");
        let elem = if ids {
            DataType::Int64
        } else {
            DataType::Float
        };
        let graph = GraphProto {
            name: "taper".into(),
            node: g.nodes,
            initializer: g.initializers,
            input: vec![value_info("input", elem, &dims)],
            output: vec![value_info("output", DataType::Float, &out.dims)],
            ..Default::default()
        };
        Ok(ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: ONNX_OPSET,
            }],
            producer_name: "taper".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(graph),
            ..Default::default()
        })
    }

    /// Every child's spec, or an error naming the first that is not one of Taper's layers.
    fn exportable_specs(&self) -> Result<Vec<LayerSpec>> {
        self.specs
            .iter()
            .zip(&self.kinds)
            .enumerate()
            .map(|(i, (spec, kind))| {
                spec.clone().ok_or_else(|| Error::Onnx {
                    at: format!("layer layers[{i}] ({kind})"),
                    reason: "not one of Taper's layers (or a Sequential holding one), so it \
                             has no ONNX form"
                        .into(),
                })
            })
            .collect()
    }
}

/// Whether the first layer (through nested `Sequential`s) is an `Embedding`.
fn starts_with_embedding(layers: &[LayerSpec]) -> bool {
    match layers.first() {
        Some(LayerSpec::Embedding { .. }) => true,
        Some(LayerSpec::Sequential { layers }) => starts_with_embedding(layers),
        _ => false,
    }
}

/// A graph input or output: dimension 0 is the dynamic `batch`, the rest fixed.
fn value_info(name: &str, elem: DataType, dims: &[usize]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .enumerate()
        .map(
            |(k, &d)| crate::onnx::proto::tensor_shape_proto::Dimension {
                value: Some(if k == 0 {
                    dimension::Value::DimParam("batch".into())
                } else {
                    dimension::Value::DimValue(d as i64)
                }),
                ..Default::default()
            },
        )
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Writes `layers` in order from `x`; child `i` has the store view `store.sub(i)` and the
/// path `{path}/{i}`.
pub(crate) fn write_chain(
    g: &mut GraphBuilder,
    layers: &[LayerSpec],
    store: &ParamStore,
    path: &str,
    mut x: Value,
) -> Result<Value> {
    for (i, spec) in layers.iter().enumerate() {
        let child = store.sub(i);
        let here = format!("{path}/{i}");
        x = match spec {
            LayerSpec::Sequential { layers } => write_chain(g, layers, &child, &here, x)?,
            _ => {
                let mut site = Site {
                    g,
                    store: child,
                    path: here,
                };
                write_layer(&mut site, spec, x)?
            }
        };
    }
    Ok(x)
}

/// One layer's nodes.
fn write_layer(s: &mut Site, spec: &LayerSpec, x: Value) -> Result<Value> {
    let kind = spec.kind().to_string();
    match spec {
        LayerSpec::Linear {
            in_features,
            out_features,
            bias,
        } => linear(s, x, *in_features, *out_features, *bias),
        LayerSpec::Conv2d { .. } => conv2d(s, spec, x),
        LayerSpec::MaxPool2d { kernel, stride } => pool(s, "MaxPool", &kind, x, *kernel, *stride),
        LayerSpec::AvgPool2d { kernel, stride } => {
            pool(s, "AveragePool", &kind, x, *kernel, *stride)
        }
        LayerSpec::BatchNorm {
            rank,
            num_features,
            eps,
            affine,
            ..
        } => batch_norm(s, x, *rank, *num_features, *eps, *affine),
        LayerSpec::LayerNorm {
            normalized_shape,
            eps,
            elementwise_affine,
            bias,
        } => layer_norm(s, x, normalized_shape, *eps, *elementwise_affine, *bias),
        LayerSpec::Dropout { .. } => {
            let name = s.node("Identity", &[&x.name], vec![]);
            Ok(Value { name, ..x })
        }
        LayerSpec::Flatten { start_dim, end_dim } => flatten(s, x, *start_dim, *end_dim),
        LayerSpec::Activation { activation } => activation_nodes(s, *activation, x),
        LayerSpec::Embedding {
            num_embeddings,
            embedding_dim,
        } => {
            let _ = num_embeddings;
            let w = s.param("weight")?;
            let name = s.node("Gather", &[&w, &x.name], vec![("axis", Attr::Int(0))]);
            let mut dims = x.dims;
            dims.push(*embedding_dim);
            Ok(Value { name, dims })
        }
        LayerSpec::Sequential { layers } => {
            let (store, path) = (s.store.clone(), s.path.to_string());
            write_chain(s.g, layers, &store, &path, x)
        }
        LayerSpec::Custom { name, .. } => Err(s.error(
            name,
            "registered custom layers have no ONNX form (write the model without it, or \
             export the rest and add the layer's operators by hand)",
        )),
        _ => export_sequence::write_sequence_layer(s, spec, x),
    }
}

/// Checks that the last dimension is `want`.
fn expect_last(s: &Site, kind: &str, x: &Value, want: usize) -> Result<()> {
    if x.dims.len() < 2 || x.dims.last() != Some(&want) {
        return Err(s.error(
            kind,
            format!(
                "its input would have shape {:?} (batch first); expected (batch, …, {want})",
                x.dims
            ),
        ));
    }
    Ok(())
}

/// `Linear`: `Gemm` on 2-D inputs (as `torch.onnx.export`), else `MatMul` by the
/// transposed weight and `Add`.
pub(crate) fn linear(
    s: &mut Site,
    x: Value,
    in_features: usize,
    out_features: usize,
    bias: bool,
) -> Result<Value> {
    expect_last(s, "Linear", &x, in_features)?;
    let w = s.param("weight")?;
    let b = if bias { Some(s.param("bias")?) } else { None };
    let mut dims = x.dims.clone();
    *dims.last_mut().expect("rank checked") = out_features;
    let name = if x.dims.len() == 2 {
        let mut inputs = vec![x.name.as_str(), w.as_str()];
        if let Some(b) = &b {
            inputs.push(b);
        }
        s.node("Gemm", &inputs, vec![("transB", Attr::Int(1))])
    } else {
        let wt = s.node("Transpose", &[&w], vec![("perm", Attr::Ints(vec![1, 0]))]);
        let y = s.node("MatMul", &[&x.name, &wt], vec![]);
        match &b {
            Some(b) => s.node("Add", &[&y, b], vec![]),
            None => y,
        }
    };
    Ok(Value { name, dims })
}

/// `Conv2d` as `Conv`.
fn conv2d(s: &mut Site, spec: &LayerSpec, x: Value) -> Result<Value> {
    let LayerSpec::Conv2d {
        in_channels,
        out_channels,
        kernel,
        stride,
        padding,
        dilation,
        groups,
        bias,
    } = *spec
    else {
        unreachable!("conv2d is called with a Conv2d spec")
    };
    if x.dims.len() != 4 || x.dims[1] != in_channels {
        return Err(s.error(
            "Conv2d",
            format!(
                "its input would have shape {:?}; expected (batch, {in_channels}, H, W)",
                x.dims
            ),
        ));
    }
    let out = |n: usize, k: usize| (n + 2 * padding).checked_sub(dilation * (k - 1) + 1);
    let (Some(h), Some(w)) = (out(x.dims[2], kernel.0), out(x.dims[3], kernel.1)) else {
        return Err(s.error(
            "Conv2d",
            format!("input {:?} is smaller than its kernel", x.dims),
        ));
    };
    let weight = s.param("weight")?;
    let b = if bias { Some(s.param("bias")?) } else { None };
    let mut inputs = vec![x.name.as_str(), weight.as_str()];
    if let Some(b) = &b {
        inputs.push(b);
    }
    let (st, p, d) = (stride as i64, padding as i64, dilation as i64);
    let name = s.node(
        "Conv",
        &inputs,
        vec![
            (
                "kernel_shape",
                Attr::Ints(vec![kernel.0 as i64, kernel.1 as i64]),
            ),
            ("strides", Attr::Ints(vec![st, st])),
            ("pads", Attr::Ints(vec![p, p, p, p])),
            ("dilations", Attr::Ints(vec![d, d])),
            ("group", Attr::Int(groups as i64)),
        ],
    );
    let dims = vec![x.dims[0], out_channels, h / stride + 1, w / stride + 1];
    Ok(Value { name, dims })
}

/// `MaxPool2d` / `AvgPool2d`: no padding, floor mode.
fn pool(
    s: &mut Site,
    op: &str,
    kind: &str,
    x: Value,
    kernel: (usize, usize),
    stride: (usize, usize),
) -> Result<Value> {
    if x.dims.len() != 4 || x.dims[2] < kernel.0 || x.dims[3] < kernel.1 {
        return Err(s.error(
            kind,
            format!(
                "its input would have shape {:?}; expected (batch, C, H, W) of at least the \
                 window {kernel:?}",
                x.dims
            ),
        ));
    }
    let name = s.node(
        op,
        &[&x.name],
        vec![
            (
                "kernel_shape",
                Attr::Ints(vec![kernel.0 as i64, kernel.1 as i64]),
            ),
            (
                "strides",
                Attr::Ints(vec![stride.0 as i64, stride.1 as i64]),
            ),
        ],
    );
    let dims = vec![
        x.dims[0],
        x.dims[1],
        (x.dims[2] - kernel.0) / stride.0 + 1,
        (x.dims[3] - kernel.1) / stride.1 + 1,
    ];
    Ok(Value { name, dims })
}

/// `BatchNorm1d`/`2d` in evaluation form: `BatchNormalization` with the running statistics.
fn batch_norm(
    s: &mut Site,
    x: Value,
    rank: u8,
    num_features: usize,
    eps: f64,
    affine: bool,
) -> Result<Value> {
    let ok = match rank {
        1 => matches!(x.dims.len(), 2 | 3),
        _ => x.dims.len() == 4,
    } && x.dims[1] == num_features;
    if !ok {
        let kind = format!("BatchNorm{rank}d");
        return Err(s.error(
            &kind,
            format!(
                "its input would have shape {:?}; expected {num_features} channels on axis 1",
                x.dims
            ),
        ));
    }
    let (scale, shift) = if affine {
        (s.param("weight")?, s.param("bias")?)
    } else {
        let path = s.path.to_string();
        (
            s.g.constant(
                &format!("{path}/scale"),
                &[num_features],
                &vec![1.0; num_features],
            ),
            s.g.constant(
                &format!("{path}/shift"),
                &[num_features],
                &vec![0.0; num_features],
            ),
        )
    };
    let mean = s.param("running_mean")?;
    let var = s.param("running_var")?;
    let name = s.node(
        "BatchNormalization",
        &[&x.name, &scale, &shift, &mean, &var],
        vec![("epsilon", Attr::Float(eps as f32))],
    );
    Ok(Value { name, ..x })
}

/// `LayerNorm` as `LayerNormalization` over the trailing `normalized_shape`.
pub(crate) fn layer_norm(
    s: &mut Site,
    x: Value,
    normalized_shape: &[usize],
    eps: f64,
    affine: bool,
    bias: bool,
) -> Result<Value> {
    let k = normalized_shape.len();
    if x.dims.len() <= k || x.dims[x.dims.len() - k..] != *normalized_shape {
        return Err(s.error(
            "LayerNorm",
            format!(
                "its input would have shape {:?}; expected (batch, …, {normalized_shape:?})",
                x.dims
            ),
        ));
    }
    let n: usize = normalized_shape.iter().product();
    let scale = if affine {
        s.param("weight")?
    } else {
        let path = s.path.to_string();
        s.g.constant(&format!("{path}/scale"), normalized_shape, &vec![1.0; n])
    };
    let mut inputs = vec![x.name.clone(), scale];
    if affine && bias {
        inputs.push(s.param("bias")?);
    }
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let name = s.node(
        "LayerNormalization",
        &inputs,
        vec![
            ("axis", Attr::Int(-(k as i64))),
            ("epsilon", Attr::Float(eps as f32)),
        ],
    );
    Ok(Value { name, ..x })
}

/// `Flatten(start_dim, end_dim)`: ONNX `Flatten` for the default (1, -1), else `Reshape`
/// that copies the leading dimensions (0) and merges the range (-1).
fn flatten(s: &mut Site, x: Value, start_dim: isize, end_dim: isize) -> Result<Value> {
    let r = x.dims.len() as isize;
    let resolve = |d: isize| if d < 0 { d + r } else { d };
    let (a, b) = (resolve(start_dim), resolve(end_dim));
    if a < 0 || b >= r || a > b {
        return Err(s.error(
            "Flatten",
            format!(
                "start_dim {start_dim} and end_dim {end_dim} do not fit its input {:?}",
                x.dims
            ),
        ));
    }
    let (a, b) = (a as usize, b as usize);
    let mut dims = x.dims[..a].to_vec();
    dims.push(x.dims[a..=b].iter().product());
    dims.extend(&x.dims[b + 1..]);
    let name = if a == 1 && b + 1 == x.dims.len() {
        s.node("Flatten", &[&x.name], vec![("axis", Attr::Int(1))])
    } else {
        let mut shape: Vec<i64> = vec![0; a];
        shape.push(-1);
        shape.extend(x.dims[b + 1..].iter().map(|&d| d as i64));
        let shape = s.g.ints(&format!("{}/shape", s.path), &shape);
        s.node("Reshape", &[&x.name, &shape], vec![])
    };
    Ok(Value { name, dims })
}

/// An activation's nodes.
pub(crate) fn activation_nodes(s: &mut Site, a: Activation, x: Value) -> Result<Value> {
    let xn = x.name.as_str();
    let name = match a {
        Activation::Relu => s.node("Relu", &[xn], vec![]),
        Activation::LeakyRelu(slope) => s.node(
            "LeakyRelu",
            &[xn],
            vec![("alpha", Attr::Float(slope as f32))],
        ),
        Activation::Elu(alpha) => s.node("Elu", &[xn], vec![("alpha", Attr::Float(alpha as f32))]),
        Activation::Gelu => {
            // x · ½ · (1 + erf(x / √2))
            let c = s.scalar("inv_sqrt2", std::f32::consts::FRAC_1_SQRT_2);
            let t = s.node("Mul", &[xn, &c], vec![]);
            let e = s.node("Erf", &[&t], vec![]);
            half_x_one_plus(s, xn, &e)
        }
        Activation::GeluTanh => {
            // ½ · x · (1 + tanh(√(2/π) · (x + 0.044715 x³)))
            let three = s.scalar("three", 3.0);
            let cube = s.node("Pow", &[xn, &three], vec![]);
            let k = s.scalar("k", 0.044715);
            let kc = s.node("Mul", &[&cube, &k], vec![]);
            let inner = s.node("Add", &[xn, &kc], vec![]);
            let c = s.scalar("sqrt_2_over_pi", (2.0 / std::f64::consts::PI).sqrt() as f32);
            let scaled = s.node("Mul", &[&inner, &c], vec![]);
            let t = s.node("Tanh", &[&scaled], vec![]);
            half_x_one_plus(s, xn, &t)
        }
        Activation::Silu => {
            let sg = s.node("Sigmoid", &[xn], vec![]);
            s.node("Mul", &[xn, &sg], vec![])
        }
        Activation::Sigmoid => s.node("Sigmoid", &[xn], vec![]),
        Activation::Tanh => s.node("Tanh", &[xn], vec![]),
        Activation::Softmax(d) => s.node("Softmax", &[xn], vec![("axis", Attr::Int(d as i64))]),
        Activation::LogSoftmax(d) => {
            s.node("LogSoftmax", &[xn], vec![("axis", Attr::Int(d as i64))])
        }
    };
    Ok(Value { name, ..x })
}

/// ½ · x · (1 + t).
fn half_x_one_plus(s: &mut Site, x: &str, t: &str) -> String {
    let one = s.scalar("one", 1.0);
    let half = s.scalar("half", 0.5);
    let p = s.node("Add", &[t, &one], vec![]);
    let xp = s.node("Mul", &[x, &p], vec![]);
    s.node("Mul", &[&xp, &half], vec![])
}
