//! ONNX import: [`Sequential::import_onnx`] reads a graph that is a chain of supported
//! operators into a `Sequential` of Taper's layers, whose weights are trainable
//! parameters under the initializers' names' layers (`0.weight`).
//!
//! The file is validated whole first ([`crate::onnx::validate`]); then each step of the
//! chain becomes one layer: its operator (or the operators an exporter writes for it, such
//! as `MatMul` + `Add` for a linear layer, or `Erf` for exact GELU) is matched, its weights
//! are checked against the shapes the built layer expects, and the layer runs once on a
//! zero example so the next step knows its input's shape. A graph that branches, an
//! unsupported operator or attribute, or a weight of the wrong shape is an error naming
//! the node and operator, and nothing is returned.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use prost::Message;
use taper_tensor::ParamStore;

use crate::error::{Error, Result};
use crate::layers::activation::Activation;
use crate::layers::sequential::Sequential;
use crate::layers::spec::LayerSpec;
use crate::onnx::proto::{attribute_proto::AttributeType, ModelProto, NodeProto};
use crate::onnx::validate::{self, as_f64, find_attr, ints, node_error, Checked};

/// The operators the importer reads, for its error messages.
const SUPPORTED: &str = "Gemm, MatMul (+ Add), Conv, MaxPool, AveragePool, \
     BatchNormalization, LayerNormalization, Flatten, Reshape (as a flatten), Gather (as an \
     embedding), Dropout, Identity, Relu, LeakyRelu, Elu, Gelu, Sigmoid, Tanh, Softmax, \
     LogSoftmax, and GELU/SiLU written with Erf, Tanh and Sigmoid";

impl Sequential {
    /// Reads the ONNX model at `path` into a `Sequential` of Taper's layers on `device` in
    /// `dtype`, with its weights as trainable parameters (fine-tune it as any model), and
    /// returns it with the store that holds them.
    ///
    /// The graph must be one chain from its input to its output of the operators listed in
    /// the README (what `torch.onnx.export` writes for MLPs and CNNs, and what
    /// [`Sequential::export_onnx`] writes for the layers that have one ONNX operator). The
    /// whole file is checked before anything is built: a truncated or altered file, an
    /// unsupported operator or attribute, or a weight of the wrong shape is an error naming
    /// the node and operator.
    ///
    /// ```no_run
    /// use taper_nn::Sequential;
    /// use taper_tensor::{DType, Device};
    /// // A CNN from `torch.onnx.export(model, x, "cnn.onnx", dynamic_axes=…)`:
    /// let (model, store) = Sequential::import_onnx("cnn.onnx", &Device::Cpu, DType::F32)?;
    /// println!("{}", model.summary(&[1, 28, 28])?);
    /// // Its parameters are trainable: hand `store` to an optimizer and train.
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn import_onnx(
        path: impl AsRef<Path>,
        device: &Device,
        dtype: DType,
    ) -> Result<(Sequential, ParamStore)> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::Onnx {
            at: format!("file {}", path.display()),
            reason: e.to_string(),
        })?;
        Self::from_onnx_bytes(&bytes, device, dtype).map_err(|e| match e {
            Error::Onnx { at, reason } => Error::Onnx {
                at: format!("{} {at}", path.display()),
                reason,
            },
            other => other,
        })
    }

    /// [`Sequential::import_onnx`] from the file's bytes.
    pub fn from_onnx_bytes(
        bytes: &[u8],
        device: &Device,
        dtype: DType,
    ) -> Result<(Sequential, ParamStore)> {
        if !dtype.is_float() {
            return Err(Error::InvalidValue {
                field: "dtype",
                value: format!("{dtype:?}"),
                expected: "a float dtype for the imported weights",
            });
        }
        let model = ModelProto::decode(bytes)
            .map_err(|e| validate::file_error(format!("not an ONNX protobuf: {e}")))?;
        let checked = validate::check(&model)?;
        let store = ParamStore::new(device, dtype);
        let mut importer = Importer {
            c: &checked,
            model: Sequential::new(&store),
            store: store.clone(),
            cur: checked.input.clone(),
            dims: checked.input_dims.clone(),
            ids: checked.ids,
            k: 0,
        };
        importer.run()?;
        let model = importer.model;
        Ok((model, store))
    }
}

/// One matched step: the layer (or none, for `Identity`), its weights by parameter name,
/// and how many nodes it took.
struct Step {
    spec: Option<LayerSpec>,
    weights: Vec<(&'static str, Tensor)>,
    nodes: usize,
}

impl Step {
    fn layer(spec: LayerSpec, weights: Vec<(&'static str, Tensor)>, nodes: usize) -> Self {
        Self {
            spec: Some(spec),
            weights,
            nodes,
        }
    }
}

/// The walk along the chain.
struct Importer<'a> {
    c: &'a Checked,
    model: Sequential,
    store: ParamStore,
    /// The chain's current value and its dimensions (batch 1).
    cur: String,
    dims: Vec<usize>,
    /// Whether `cur` holds token ids.
    ids: bool,
    /// The next node.
    k: usize,
}

impl Importer<'_> {
    /// Matches steps until the graph's output.
    fn run(&mut self) -> Result<()> {
        while self.k < self.c.nodes.len() {
            let node = &self.c.nodes[self.k];
            if !node.input.contains(&self.cur) {
                return Err(node_error(
                    node,
                    format!(
                        "does not read `{}`, the output of the step before: only a chain of \
                         layers can be imported",
                        self.cur
                    ),
                ));
            }
            let step = self.step(node)?;
            let last = &self.c.nodes[self.k + step.nodes - 1];
            if let Some(spec) = step.spec {
                self.push(last, spec, step.weights)?;
            }
            self.cur = last.output[0].clone();
            self.k += step.nodes;
        }
        if self.cur != self.c.output {
            return Err(validate::file_error(format!(
                "the chain ends at `{}`, not at the graph output `{}`",
                self.cur, self.c.output
            )));
        }
        Ok(())
    }

    /// The step that starts at `node`.
    fn step(&self, node: &NodeProto) -> Result<Step> {
        let op = node.op_type.as_str();
        if let Some(a) = self.activation(node)? {
            return Ok(a);
        }
        match op {
            "Gemm" => self.gemm(node),
            "MatMul" => self.matmul(node),
            "Conv" => self.conv(node),
            "MaxPool" | "AveragePool" => self.pool(node),
            "BatchNormalization" => self.batch_norm(node),
            "LayerNormalization" => self.layer_norm(node),
            "Flatten" => {
                let axis = int_attr(node, "axis", 1)?;
                if axis != 1 {
                    return Err(node_error(
                        node,
                        format!("axis {axis}; only 1 (flatten all but the batch) is supported"),
                    ));
                }
                Ok(Step::layer(
                    LayerSpec::Flatten {
                        start_dim: 1,
                        end_dim: -1,
                    },
                    vec![],
                    1,
                ))
            }
            "Reshape" => self.reshape(node),
            "Identity" => Ok(Step {
                spec: None,
                weights: vec![],
                nodes: 1,
            }),
            "Dropout" => {
                let p = match node.input.get(1).filter(|n| !n.is_empty()) {
                    Some(name) => scalar(node, name, self.constant(node, name)?)?,
                    None => 0.5,
                };
                Ok(Step::layer(LayerSpec::Dropout { p }, vec![], 1))
            }
            "Gather" => self.gather(node),
            _ => Err(node_error(
                node,
                format!("operator `{op}` is not supported; the importer reads {SUPPORTED}"),
            )),
        }
    }

    /// Builds `spec` as the next child, loads `weights` into it after checking their shapes,
    /// and runs it once to learn its output's shape.
    fn push(
        &mut self,
        node: &NodeProto,
        spec: LayerSpec,
        weights: Vec<(&'static str, Tensor)>,
    ) -> Result<()> {
        let i = self.model.len();
        let child = self.store.sub(i);
        let layer = spec
            .build(&child)
            .map_err(|e| node_error(node, format!("cannot build {}: {e}", spec.kind())))?;
        for (name, t) in weights {
            let var = child.var(name)?;
            if var.dims() != t.dims() {
                return Err(node_error(
                    node,
                    format!(
                        "{} `{name}` has shape {:?}; the layer expects {:?}",
                        spec.kind(),
                        t.dims(),
                        var.dims()
                    ),
                ));
            }
            var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
        }
        let dtype = if self.ids {
            DType::U32
        } else {
            self.store.dtype()
        };
        let x = Tensor::zeros(self.dims.as_slice(), dtype, self.store.device())?;
        let y = taper_tensor::no_grad(|| layer.forward_t(&x, false)).map_err(|e| {
            node_error(
                node,
                format!("{} on input {:?}: {e}", spec.kind(), self.dims),
            )
        })?;
        self.dims = y.dims().to_vec();
        self.ids = false;
        self.model.push_built(layer, spec)?;
        Ok(())
    }

    /// A constant input of `node`.
    fn constant<'b>(&'b self, node: &NodeProto, name: &str) -> Result<&'b Tensor> {
        self.c.constants.get(name).ok_or_else(|| {
            node_error(
                node,
                format!("`{name}` must be a constant (an initializer), not a computed value"),
            )
        })
    }

    /// The float constant at input `k` of `node`, if that input is present.
    fn weight(&self, node: &NodeProto, k: usize) -> Result<Option<Tensor>> {
        match node.input.get(k).filter(|n| !n.is_empty()) {
            Some(name) => Ok(Some(as_f64(node, name, self.constant(node, name)?)?)),
            None => Ok(None),
        }
    }

    /// The float constant at input `k`, which must be present.
    fn required(&self, node: &NodeProto, k: usize, what: &str) -> Result<Tensor> {
        self.weight(node, k)?
            .ok_or_else(|| node_error(node, format!("has no {what} (input {k})")))
    }

    /// Requires the chain's value as the node's data input `k`.
    fn data_input(&self, node: &NodeProto, k: usize) -> Result<()> {
        if node.input.get(k) != Some(&self.cur) {
            return Err(node_error(
                node,
                format!("expected the chain's value `{}` as input {k}", self.cur),
            ));
        }
        Ok(())
    }

    /// `Gemm(x, W, b)` with α = β = 1 and x not transposed: a linear layer.
    fn gemm(&self, node: &NodeProto) -> Result<Step> {
        self.data_input(node, 0)?;
        for (name, want) in [("alpha", 1.0), ("beta", 1.0)] {
            let v = float_attr(node, name, want)?;
            if v != want {
                return Err(node_error(
                    node,
                    format!("{name} {v}; only {want} is supported"),
                ));
            }
        }
        if int_attr(node, "transA", 0)? != 0 {
            return Err(node_error(node, "transA 1 is not supported"));
        }
        let w = self.required(node, 1, "weight")?;
        let w = if int_attr(node, "transB", 0)? == 1 {
            w
        } else {
            w.t()?.contiguous()?
        };
        let b = self.weight(node, 2)?;
        linear_step(node, w, b, 1)
    }

    /// `MatMul(x, W)`, with a following `Add` of a bias: a linear layer.
    fn matmul(&self, node: &NodeProto) -> Result<Step> {
        self.data_input(node, 0)?;
        let w = self.required(node, 1, "weight")?;
        if w.rank() != 2 {
            return Err(node_error(
                node,
                format!("weight of shape {:?}; expected 2-D", w.dims()),
            ));
        }
        let w = w.t()?.contiguous()?;
        let out = &node.output[0];
        if let Some(add) = self.c.nodes.get(self.k + 1) {
            if add.op_type == "Add" && add.input.len() == 2 && add.input.contains(out) {
                let other = if add.input[0] == *out { 1 } else { 0 };
                if let Some(b) = self.c.constants.get(&add.input[other]) {
                    let b = as_f64(add, &add.input[other], b)?;
                    return linear_step(add, w, Some(b), 2);
                }
            }
        }
        linear_step(node, w, None, 1)
    }

    /// `Conv` over 2-D images with equal strides, symmetric equal padding and equal
    /// dilations (what `Conv2d` holds).
    fn conv(&self, node: &NodeProto) -> Result<Step> {
        self.data_input(node, 0)?;
        let w = self.required(node, 1, "weight")?;
        let &[out_channels, in_per_group, kh, kw] = w.dims() else {
            return Err(node_error(
                node,
                format!(
                    "weight of shape {:?}; only 2-D convolutions (4-D weights)",
                    w.dims()
                ),
            ));
        };
        no_auto_pad(node)?;
        if let Some(k) = find_attr(node, "kernel_shape") {
            if ints(node, k)? != [kh as i64, kw as i64] {
                return Err(node_error(node, "kernel_shape does not match the weight"));
            }
        }
        let stride = uniform(node, "strides", 2, 1)?;
        let padding = uniform(node, "pads", 4, 0)?;
        let dilation = uniform(node, "dilations", 2, 1)?;
        let groups = positive(node, "group", int_attr(node, "group", 1)?)?;
        let b = self.weight(node, 2)?;
        let spec = LayerSpec::Conv2d {
            in_channels: in_per_group * groups,
            out_channels,
            kernel: (kh, kw),
            stride,
            padding,
            dilation,
            groups,
            bias: b.is_some(),
        };
        let mut weights = vec![("weight", w)];
        if let Some(b) = b {
            weights.push(("bias", b));
        }
        Ok(Step::layer(spec, weights, 1))
    }

    /// `MaxPool` / `AveragePool` with no padding, floor mode and no dilation.
    fn pool(&self, node: &NodeProto) -> Result<Step> {
        self.data_input(node, 0)?;
        no_auto_pad(node)?;
        if node.output.len() > 1 && !node.output[1].is_empty() {
            return Err(node_error(node, "the indices output is not supported"));
        }
        let k = find_attr(node, "kernel_shape")
            .ok_or_else(|| node_error(node, "has no kernel_shape"))?;
        let k = ints(node, k)?;
        let &[kh, kw] = &k[..] else {
            return Err(node_error(
                node,
                format!("kernel_shape {k:?}; only 2-D pools"),
            ));
        };
        let kernel = (
            positive(node, "kernel_shape", kh)?,
            positive(node, "kernel_shape", kw)?,
        );
        let stride = match find_attr(node, "strides") {
            Some(a) => match ints(node, a)?[..] {
                [sh, sw] => (
                    positive(node, "strides", sh)?,
                    positive(node, "strides", sw)?,
                ),
                _ => return Err(node_error(node, "strides must have 2 values")),
            },
            None => (1, 1),
        };
        if uniform(node, "pads", 4, 0)? != 0 {
            return Err(node_error(node, "padding is not supported in pools"));
        }
        if uniform(node, "dilations", 2, 1)? != 1 {
            return Err(node_error(node, "dilated pools are not supported"));
        }
        if int_attr(node, "ceil_mode", 0)? != 0 {
            return Err(node_error(node, "ceil_mode 1 is not supported"));
        }
        let spec = if node.op_type == "MaxPool" {
            LayerSpec::MaxPool2d { kernel, stride }
        } else {
            LayerSpec::AvgPool2d { kernel, stride }
        };
        Ok(Step::layer(spec, vec![], 1))
    }

    /// `BatchNormalization` in inference form: BatchNorm1d or 2d with its statistics.
    fn batch_norm(&self, node: &NodeProto) -> Result<Step> {
        self.data_input(node, 0)?;
        if int_attr(node, "training_mode", 0)? != 0
            || node.output.iter().skip(1).any(|o| !o.is_empty())
        {
            return Err(node_error(node, "training mode is not supported"));
        }
        let rank = match self.dims.len() {
            2 | 3 => 1,
            4 => 2,
            r => {
                return Err(node_error(
                    node,
                    format!("input of rank {r}; expected 2, 3 or 4"),
                ))
            }
        };
        let scale = self.required(node, 1, "scale")?;
        let shift = self.required(node, 2, "bias")?;
        let mean = self.required(node, 3, "mean")?;
        let var = self.required(node, 4, "variance")?;
        let eps = float_attr(node, "epsilon", 1e-5)? as f64;
        // ONNX's momentum weighs the old statistics; PyTorch's the new batch.
        let momentum = 1.0 - float_attr(node, "momentum", 0.9)? as f64;
        let spec = LayerSpec::BatchNorm {
            rank,
            num_features: scale.elem_count(),
            eps,
            momentum,
            affine: true,
        };
        let weights = vec![
            ("weight", scale),
            ("bias", shift),
            ("running_mean", mean),
            ("running_var", var),
        ];
        Ok(Step::layer(spec, weights, 1))
    }

    /// `LayerNormalization` over the trailing dimensions from `axis`.
    fn layer_norm(&self, node: &NodeProto) -> Result<Step> {
        self.data_input(node, 0)?;
        let r = self.dims.len() as i64;
        let axis = int_attr(node, "axis", -1)?;
        let axis = if axis < 0 { axis + r } else { axis };
        if !(1..r).contains(&axis) {
            return Err(node_error(node, format!("axis out of range for rank {r}")));
        }
        let normalized_shape = self.dims[axis as usize..].to_vec();
        let scale = self.required(node, 1, "scale")?;
        let shift = self.weight(node, 2)?;
        let spec = LayerSpec::LayerNorm {
            normalized_shape: normalized_shape.clone(),
            eps: float_attr(node, "epsilon", 1e-5)? as f64,
            elementwise_affine: true,
            bias: shift.is_some(),
        };
        let mut weights = vec![("weight", scale.reshape(normalized_shape.as_slice())?)];
        if let Some(b) = shift {
            weights.push(("bias", b.reshape(normalized_shape.as_slice())?));
        }
        Ok(Step::layer(spec, weights, 1))
    }

    /// `Reshape` that merges a range of dimensions, keeping the batch: a `Flatten`.
    fn reshape(&self, node: &NodeProto) -> Result<Step> {
        self.data_input(node, 0)?;
        let name = node
            .input
            .get(1)
            .ok_or_else(|| node_error(node, "has no shape input"))?;
        let shape = self.constant(node, name)?;
        if shape.dtype() != DType::I64 || shape.rank() != 1 {
            return Err(node_error(node, "the shape must be a 1-D int64 constant"));
        }
        let shape = shape.to_vec1::<i64>()?;
        let allow_zero = int_attr(node, "allowzero", 0)? != 0;
        let dims = &self.dims;
        // The batch must stay dynamic: the shape's first entry copies it (0) or infers it (-1).
        let batch_kept =
            matches!(shape.first(), Some(0) if !allow_zero) || shape.first() == Some(&-1);
        let target: Vec<Option<usize>> = shape
            .iter()
            .enumerate()
            .map(|(i, &s)| match s {
                0 if !allow_zero => dims.get(i).copied(),
                -1 => None,
                s if s > 0 => Some(s as usize),
                _ => Some(usize::MAX),
            })
            .collect();
        for start in 1..dims.len() {
            for end in start..dims.len() {
                let mut merged = dims[..start].to_vec();
                merged.push(dims[start..=end].iter().product());
                merged.extend(&dims[end + 1..]);
                let fits = merged.len() == target.len()
                    && target.iter().filter(|t| t.is_none()).count() <= 1
                    && merged
                        .iter()
                        .zip(&target)
                        .all(|(m, t)| t.is_none_or(|t| t == *m));
                if fits && batch_kept {
                    if start == end {
                        return Ok(Step {
                            spec: None,
                            weights: vec![],
                            nodes: 1,
                        });
                    }
                    let end_dim = end as isize - dims.len() as isize;
                    let spec = LayerSpec::Flatten {
                        start_dim: start as isize,
                        end_dim,
                    };
                    return Ok(Step::layer(spec, vec![], 1));
                }
            }
        }
        Err(node_error(
            node,
            format!(
                "reshape of {dims:?} (batch 1) to {shape:?} is not a flatten that keeps the \
                 batch dimension"
            ),
        ))
    }

    /// `Gather(table, ids)` on axis 0: an embedding.
    fn gather(&self, node: &NodeProto) -> Result<Step> {
        self.data_input(node, 1)?;
        if int_attr(node, "axis", 0)? != 0 || !self.ids {
            return Err(node_error(
                node,
                "only a lookup of the input's token ids in a table (axis 0) is supported",
            ));
        }
        let w = self.required(node, 0, "table")?;
        let &[num_embeddings, embedding_dim] = w.dims() else {
            return Err(node_error(node, "the table must be 2-D"));
        };
        let spec = LayerSpec::Embedding {
            num_embeddings,
            embedding_dim,
        };
        Ok(Step::layer(spec, vec![("weight", w)], 1))
    }

    /// An activation: its own operator, or the patterns exporters write for SiLU and GELU.
    fn activation(&self, node: &NodeProto) -> Result<Option<Step>> {
        let one = |a: Activation| {
            Some(Step::layer(
                LayerSpec::Activation { activation: a },
                vec![],
                1,
            ))
        };
        let axis = || int_attr(node, "axis", -1).map(|a| a as isize);
        Ok(match node.op_type.as_str() {
            "Relu" => one(Activation::Relu),
            "Tanh" => one(Activation::Tanh),
            "LeakyRelu" => one(Activation::LeakyRelu(
                float_attr(node, "alpha", 0.01)? as f64
            )),
            "Elu" => one(Activation::Elu(float_attr(node, "alpha", 1.0)? as f64)),
            "Softmax" => one(Activation::Softmax(axis()?)),
            "LogSoftmax" => one(Activation::LogSoftmax(axis()?)),
            "Gelu" if self.c.opset < 20 => {
                return Err(node_error(node, "Gelu is an operator from opset 20 on"))
            }
            "Gelu" => match string_attr(node, "approximate")?.as_deref() {
                None | Some("none") => one(Activation::Gelu),
                Some("tanh") => one(Activation::GeluTanh),
                Some(other) => {
                    return Err(node_error(
                        node,
                        format!("approximate `{other}` is unknown"),
                    ))
                }
            },
            "Sigmoid" => match self.pattern(SILU) {
                Some(n) => Some(Step::layer(act(Activation::Silu), vec![], n)),
                None => one(Activation::Sigmoid),
            },
            _ => [
                (GELU_ERF, Activation::Gelu),
                (GELU_ERF_DIV, Activation::Gelu),
                (GELU_TANH, Activation::GeluTanh),
            ]
            .into_iter()
            .find_map(|(p, a)| self.pattern(p).map(|n| Step::layer(act(a), vec![], n))),
        })
    }

    /// How many nodes from the current one match `pattern`, if they all do.
    fn pattern(&self, pattern: &[(&str, &[Arg])]) -> Option<usize> {
        let nodes = self.c.nodes.get(self.k..self.k + pattern.len())?;
        let mut prev = self.cur.as_str();
        for (node, (op, args)) in nodes.iter().zip(pattern) {
            if node.op_type != *op || node.input.len() != args.len() {
                return None;
            }
            // Add and Mul commute: try the inputs in both orders.
            let matches = |order: &[usize]| {
                order.iter().zip(args.iter()).all(|(&i, a)| match a {
                    Arg::X => node.input[i] == self.cur,
                    Arg::Prev => node.input[i] == prev,
                    Arg::C(v) => self
                        .c
                        .constants
                        .get(&node.input[i])
                        .filter(|t| t.elem_count() == 1 && t.dtype() == DType::F64)
                        .and_then(|t| t.flatten_all().ok()?.to_vec1::<f64>().ok())
                        .is_some_and(|x| (x[0] - v).abs() <= 1e-6 * v.abs().max(1.0)),
                })
            };
            let ok = matches(&[0, 1][..args.len()])
                || (args.len() == 2 && matches!(*op, "Add" | "Mul") && matches(&[1, 0]));
            if !ok {
                return None;
            }
            prev = &node.output[0];
        }
        Some(pattern.len())
    }
}

/// An input in an activation pattern: the chain's value, the previous node's output, or a
/// scalar constant.
enum Arg {
    X,
    Prev,
    C(f64),
}

/// SiLU: x · σ(x).
const SILU: &[(&str, &[Arg])] = &[("Sigmoid", &[Arg::X]), ("Mul", &[Arg::X, Arg::Prev])];

/// Exact GELU as Taper and PyTorch's exporters write it: ½ · x · (1 + erf(x / √2)).
const GELU_ERF: &[(&str, &[Arg])] = &[
    ("Mul", &[Arg::X, Arg::C(std::f64::consts::FRAC_1_SQRT_2)]),
    ("Erf", &[Arg::Prev]),
    ("Add", &[Arg::Prev, Arg::C(1.0)]),
    ("Mul", &[Arg::X, Arg::Prev]),
    ("Mul", &[Arg::Prev, Arg::C(0.5)]),
];

/// The same with a division by √2.
const GELU_ERF_DIV: &[(&str, &[Arg])] = &[
    ("Div", &[Arg::X, Arg::C(std::f64::consts::SQRT_2)]),
    ("Erf", &[Arg::Prev]),
    ("Add", &[Arg::Prev, Arg::C(1.0)]),
    ("Mul", &[Arg::X, Arg::Prev]),
    ("Mul", &[Arg::Prev, Arg::C(0.5)]),
];

/// GELU's tanh form as Taper writes it.
const GELU_TANH: &[(&str, &[Arg])] = &[
    ("Pow", &[Arg::X, Arg::C(3.0)]),
    ("Mul", &[Arg::Prev, Arg::C(0.044715)]),
    ("Add", &[Arg::X, Arg::Prev]),
    ("Mul", &[Arg::Prev, Arg::C(0.7978845608028654)]),
    ("Tanh", &[Arg::Prev]),
    ("Add", &[Arg::Prev, Arg::C(1.0)]),
    ("Mul", &[Arg::X, Arg::Prev]),
    ("Mul", &[Arg::Prev, Arg::C(0.5)]),
];

fn act(activation: Activation) -> LayerSpec {
    LayerSpec::Activation { activation }
}

/// A linear layer from its (out, in) weight and bias.
fn linear_step(node: &NodeProto, w: Tensor, b: Option<Tensor>, nodes: usize) -> Result<Step> {
    let &[out_features, in_features] = w.dims() else {
        return Err(node_error(
            node,
            format!("weight of shape {:?}; expected 2-D", w.dims()),
        ));
    };
    let mut weights = vec![("weight", w)];
    if let Some(b) = &b {
        if b.elem_count() != out_features {
            return Err(node_error(
                node,
                format!(
                    "bias of shape {:?}; expected {out_features} values",
                    b.dims()
                ),
            ));
        }
        weights.push(("bias", b.reshape(out_features)?));
    }
    let spec = LayerSpec::Linear {
        in_features,
        out_features,
        bias: b.is_some(),
    };
    Ok(Step::layer(spec, weights, nodes))
}

/// The single value of a scalar float constant.
fn scalar(node: &NodeProto, name: &str, t: &Tensor) -> Result<f64> {
    let t = as_f64(node, name, t)?;
    if t.elem_count() != 1 {
        return Err(node_error(node, format!("`{name}` must be a scalar")));
    }
    Ok(t.flatten_all()?.to_vec1::<f64>()?[0])
}

/// An `INT` attribute, or its default.
fn int_attr(node: &NodeProto, name: &str, default: i64) -> Result<i64> {
    match find_attr(node, name) {
        None => Ok(default),
        Some(a) if a.r#type == AttributeType::Int as i32 => Ok(a.i),
        Some(_) => Err(node_error(
            node,
            format!("attribute `{name}` must be an int"),
        )),
    }
}

/// A `FLOAT` attribute, or its default.
fn float_attr(node: &NodeProto, name: &str, default: f32) -> Result<f32> {
    match find_attr(node, name) {
        None => Ok(default),
        Some(a) if a.r#type == AttributeType::Float as i32 => Ok(a.f),
        Some(_) => Err(node_error(
            node,
            format!("attribute `{name}` must be a float"),
        )),
    }
}

/// A `STRING` attribute, if present.
fn string_attr(node: &NodeProto, name: &str) -> Result<Option<String>> {
    match find_attr(node, name) {
        None => Ok(None),
        Some(a) if a.r#type == AttributeType::String as i32 => {
            Ok(Some(String::from_utf8_lossy(&a.s).into_owned()))
        }
        Some(_) => Err(node_error(
            node,
            format!("attribute `{name}` must be a string"),
        )),
    }
}

/// An attribute that must be at least 1.
fn positive(node: &NodeProto, name: &str, v: i64) -> Result<usize> {
    if !(1..=1 << 20).contains(&v) {
        return Err(node_error(node, format!("{name} {v}; expected 1 to 2^20")));
    }
    Ok(v as usize)
}

/// An `INTS` attribute of `len` equal values (or absent: `default`), as one number.
fn uniform(node: &NodeProto, name: &str, len: usize, default: usize) -> Result<usize> {
    let Some(a) = find_attr(node, name) else {
        return Ok(default);
    };
    let v = ints(node, a)?;
    if v.len() != len || v.iter().any(|&x| x != v[0]) || v[0] < 0 || v[0] > 1 << 20 {
        return Err(node_error(
            node,
            format!("{name} {v:?}; Taper's layer needs {len} equal values"),
        ));
    }
    if default == 1 && v[0] == 0 {
        return Err(node_error(node, format!("{name} {v:?} must be positive")));
    }
    Ok(v[0] as usize)
}

/// Requires `auto_pad` absent or `NOTSET`.
fn no_auto_pad(node: &NodeProto) -> Result<()> {
    match string_attr(node, "auto_pad")?.as_deref() {
        None | Some("NOTSET") => Ok(()),
        Some(other) => Err(node_error(
            node,
            format!("auto_pad `{other}` is not supported (write explicit pads)"),
        )),
    }
}
