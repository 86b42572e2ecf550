//! ONNX export of the sequence layers: positions and RMSNorm; multi-head attention and the
//! transformer layers as the operators they are made of (Split, MatMul, Softmax, …, with
//! the packed projections split in the graph so the initializers keep PyTorch's names);
//! RNN, LSTM and GRU as ONNX's own operators, with PyTorch's gate order rearranged into
//! ONNX's (the rearranged weights are initializers named after the layer's path).

use candle_core::Tensor;

use crate::error::Result;
use crate::layers::multihead_attention::MultiheadAttentionConfig;
use crate::layers::recurrent::{RecurrentConfig, RecurrentKind, RnnNonlinearity};
use crate::layers::spec::LayerSpec;
use crate::layers::transformer::{FeedForwardActivation, TransformerConfig};
use crate::onnx::export::{layer_norm, linear, Attr1, Site, Value};
use crate::onnx::graph::Attr;

/// The nodes of a sequence layer (any kind `export` does not write itself).
pub(crate) fn write_sequence_layer(s: &mut Site, spec: &LayerSpec, x: Value) -> Result<Value> {
    match spec {
        LayerSpec::RmsNorm { config } => rms_norm(
            s,
            x,
            &config.normalized_shape,
            config.eps,
            config.elementwise_affine,
        ),
        LayerSpec::PositionalEmbedding { max_len, dim } => {
            let table = s.param("weight")?;
            add_positions(s, x, &table, *max_len, *dim, "PositionalEmbedding")
        }
        LayerSpec::SinusoidalEncoding { max_len, dim } => {
            let layer = crate::layers::positional::SinusoidalEncoding {
                max_len: *max_len,
                dim: *dim,
            };
            let t = layer.table(*max_len, candle_core::DType::F32, &candle_core::Device::Cpu)?;
            let path = s.path.to_string();
            let table = s.g.weight(&format!("{path}/table"), &t)?;
            add_positions(s, x, &table, *max_len, *dim, "SinusoidalEncoding")
        }
        LayerSpec::MultiheadAttention { config } => {
            let x = to_batch_first(s, "MultiheadAttention", config.batch_first, x)?;
            let y = attention(s, config, &x, &x)?;
            from_batch_first(s, config.batch_first, y)
        }
        LayerSpec::TransformerEncoderLayer { config } => {
            let x = to_batch_first(s, "TransformerEncoderLayer", config.batch_first, x)?;
            let y = encoder_layer(s, config, x)?;
            from_batch_first(s, config.batch_first, y)
        }
        LayerSpec::TransformerDecoderLayer { config } => {
            let x = to_batch_first(s, "TransformerDecoderLayer", config.batch_first, x)?;
            let y = decoder_layer(s, config, x)?;
            from_batch_first(s, config.batch_first, y)
        }
        LayerSpec::TransformerEncoder {
            config,
            num_layers,
            final_norm,
        } => {
            let mut x = to_batch_first(s, "TransformerEncoder", config.batch_first, x)?;
            for i in 0..*num_layers {
                x = encoder_layer(&mut s.sub(&format!("layers.{i}")), config, x)?;
            }
            if *final_norm {
                x = norm(&mut s.sub("norm"), config, x)?;
            }
            from_batch_first(s, config.batch_first, x)
        }
        LayerSpec::Recurrent { recurrence, config } => recurrent(s, *recurrence, config, x),
        other => Err(s.error(other.kind(), "this layer kind has no ONNX form")),
    }
}

/// (L, N, E) to (N, L, E) when the layer is sequence-first; checks the rank.
fn to_batch_first(s: &mut Site, kind: &str, batch_first: bool, x: Value) -> Result<Value> {
    if x.dims.len() != 3 {
        return Err(s.error(
            kind,
            format!(
                "its input would have shape {:?}; the export takes batched 3-D inputs",
                x.dims
            ),
        ));
    }
    if batch_first {
        return Ok(x);
    }
    swap01(s, x)
}

/// The inverse of [`to_batch_first`].
fn from_batch_first(s: &mut Site, batch_first: bool, x: Value) -> Result<Value> {
    if batch_first {
        Ok(x)
    } else {
        swap01(s, x)
    }
}

/// Swaps the first two dimensions of a 3-D value.
fn swap01(s: &mut Site, x: Value) -> Result<Value> {
    let name = s.node(
        "Transpose",
        &[&x.name],
        vec![("perm", Attr::Ints(vec![1, 0, 2]))],
    );
    let dims = vec![x.dims[1], x.dims[0], x.dims[2]];
    Ok(Value { name, dims })
}

/// Multi-head attention of queries from `xq` over keys and values from `xkv` (the same
/// value for self-attention), both (N, L, E), with the site's projections.
fn attention(
    s: &mut Site,
    config: &MultiheadAttentionConfig,
    xq: &Value,
    xkv: &Value,
) -> Result<Value> {
    let (e, h) = (config.embed_dim, config.num_heads);
    if config.kdim != e || config.vdim != e || xq.dims[2] != e || xkv.dims[2] != e {
        return Err(s.error(
            "MultiheadAttention",
            format!(
                "inputs {:?} and {:?}; expected self-attention of width {e} (kdim = vdim = \
                 embed_dim)",
                xq.dims, xkv.dims
            ),
        ));
    }
    let [q, k, v] = project_qkv(s, config, &xq.name, &xkv.name)?;
    let path = s.path.clone();
    let d = e / h;
    let split_heads =
        s.g.ints(&format!("{path}/heads"), &[0, 0, h as i64, d as i64]);
    let heads = |s: &mut Site, t: &str, perm: Vec<i64>| {
        let r = s.node("Reshape", &[t, &split_heads], vec![]);
        s.node("Transpose", &[&r], vec![("perm", Attr::Ints(perm))])
    };
    let qh = heads(s, &q, vec![0, 2, 1, 3]); // (N, H, L, D)
    let kt = heads(s, &k, vec![0, 2, 3, 1]); // (N, H, D, S)
    let vh = heads(s, &v, vec![0, 2, 1, 3]); // (N, H, S, D)
    let scores = s.node("MatMul", &[&qh, &kt], vec![]);
    let scale = s.scalar("scale", 1.0 / (d as f32).sqrt());
    let scaled = s.node("Mul", &[&scores, &scale], vec![]);
    let p = s.node("Softmax", &[&scaled], vec![("axis", Attr::Int(-1))]);
    let o = s.node("MatMul", &[&p, &vh], vec![]);
    let o = s.node(
        "Transpose",
        &[&o],
        vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))],
    );
    let merge = s.g.ints(&format!("{path}/merge"), &[0, 0, e as i64]);
    let o = s.node("Reshape", &[&o, &merge], vec![]);
    let o = Value {
        name: o,
        dims: xq.dims.clone(),
    };
    linear(&mut s.sub("out_proj"), o, e, e, config.bias)
}

/// The query, key and value projections (N, L, E) of `xq` and `xkv`: the packed
/// `in_proj_weight` and `in_proj_bias` split into thirds in the graph, so the initializers
/// keep PyTorch's names.
fn project_qkv(
    s: &mut Site,
    config: &MultiheadAttentionConfig,
    xq: &str,
    xkv: &str,
) -> Result<[String; 3]> {
    let e = config.embed_dim;
    let path = s.path.clone();
    let thirds = s.g.ints(&format!("{path}/thirds"), &[e as i64; 3]);
    let split = |s: &mut Site, name: &str| -> Result<Vec<String>> {
        let t = s.param(name)?;
        let axis = vec![crate::onnx::graph::attr("axis", Attr::Int(0))];
        Ok(s.g.node_n(&path, "Split", &[&t, &thirds], axis, 3))
    };
    let w = split(s, "in_proj_weight")?;
    let b = if config.bias {
        Some(split(s, "in_proj_bias")?)
    } else {
        None
    };
    let mut project = |x: &str, k: usize| {
        let wt = s.node(
            "Transpose",
            &[&w[k]],
            vec![("perm", Attr::Ints(vec![1, 0]))],
        );
        let y = s.node("MatMul", &[x, &wt], vec![]);
        match &b {
            Some(b) => s.node("Add", &[&y, &b[k]], vec![]),
            None => y,
        }
    };
    Ok([project(xq, 0), project(xkv, 1), project(xkv, 2)])
}

/// The attention configuration of a transformer layer's blocks.
fn attention_config(c: &TransformerConfig) -> MultiheadAttentionConfig {
    MultiheadAttentionConfig::new(c.d_model, c.nhead)
        .bias(c.bias)
        .batch_first(true)
}

/// A transformer layer's layer norm at `s`.
fn norm(s: &mut Site, c: &TransformerConfig, x: Value) -> Result<Value> {
    layer_norm(s, x, &[c.d_model], c.layer_norm_eps, true, c.bias)
}

/// linear2(activation(linear1(x))).
fn feed_forward(s: &mut Site, c: &TransformerConfig, x: Value) -> Result<Value> {
    let h = linear(
        &mut s.sub("linear1"),
        x,
        c.d_model,
        c.dim_feedforward,
        c.bias,
    )?;
    let a = match c.activation {
        FeedForwardActivation::Relu => crate::layers::activation::Activation::Relu,
        FeedForwardActivation::Gelu => crate::layers::activation::Activation::Gelu,
    };
    let h = crate::onnx::export::activation_nodes(s, a, h)?;
    linear(
        &mut s.sub("linear2"),
        h,
        c.dim_feedforward,
        c.d_model,
        c.bias,
    )
}

/// x + y.
fn residual(s: &mut Site, x: &Value, y: Value) -> Value {
    let name = s.node("Add", &[&x.name, &y.name], vec![]);
    Value { name, ..y }
}

/// A block of a transformer layer with its norm, before (pre-norm) or after (post-norm)
/// the residual connection.
fn block(
    s: &mut Site,
    c: &TransformerConfig,
    norm_name: &str,
    x: Value,
    f: impl FnOnce(&mut Site, Value) -> Result<Value>,
) -> Result<Value> {
    if c.norm_first {
        let n = norm(&mut s.sub(norm_name), c, x.clone())?;
        let y = f(s, n)?;
        Ok(residual(s, &x, y))
    } else {
        let y = f(s, x.clone())?;
        let sum = residual(s, &x, y);
        norm(&mut s.sub(norm_name), c, sum)
    }
}

/// `TransformerEncoderLayer` on (N, L, E), without masks.
fn encoder_layer(s: &mut Site, c: &TransformerConfig, x: Value) -> Result<Value> {
    let ac = attention_config(c);
    let x = block(s, c, "norm1", x, |s, x| {
        attention(&mut s.sub("self_attn"), &ac, &x, &x)
    })?;
    block(s, c, "norm2", x, |s, x| feed_forward(s, c, x))
}

/// `TransformerDecoderLayer` on (N, L, E) with its input as its memory, without masks.
fn decoder_layer(s: &mut Site, c: &TransformerConfig, x: Value) -> Result<Value> {
    let ac = attention_config(c);
    let memory = x.clone();
    let x = block(s, c, "norm1", x, |s, x| {
        attention(&mut s.sub("self_attn"), &ac, &x, &x)
    })?;
    let x = block(s, c, "norm2", x, |s, x| {
        attention(&mut s.sub("multihead_attn"), &ac, &x, &memory)
    })?;
    block(s, c, "norm3", x, |s, x| feed_forward(s, c, x))
}

/// PyTorch's gate blocks in ONNX's order: LSTM i,f,g,o → i,o,f,c; GRU r,z,n → z,r,h.
fn onnx_gate_order(kind: RecurrentKind) -> &'static [usize] {
    match kind {
        RecurrentKind::Lstm => &[0, 3, 1, 2],
        RecurrentKind::Gru => &[1, 0, 2],
        RecurrentKind::Rnn(_) => &[0],
    }
}

/// `t`'s row blocks (one per gate) in ONNX's order.
fn reorder(t: &Tensor, kind: RecurrentKind) -> Result<Tensor> {
    let order = onnx_gate_order(kind);
    let blocks = t.chunk(order.len(), 0)?;
    let parts: Vec<&Tensor> = order.iter().map(|&k| &blocks[k]).collect();
    Ok(Tensor::cat(&parts, 0)?)
}

/// The attributes of ONNX's RNN, LSTM or GRU for this configuration.
fn recurrent_attributes(kind: RecurrentKind, c: &RecurrentConfig) -> Vec<Attr1> {
    let direction = if c.bidirectional {
        "bidirectional"
    } else {
        "forward"
    };
    let mut attrs = vec![
        ("hidden_size", Attr::Int(c.hidden_size as i64)),
        ("direction", Attr::Str(direction)),
    ];
    match kind {
        // PyTorch applies the reset gate after the hidden state's linear map.
        RecurrentKind::Gru => attrs.push(("linear_before_reset", Attr::Int(1))),
        RecurrentKind::Rnn(f) => {
            let f = match f {
                RnnNonlinearity::Tanh => "Tanh",
                RnnNonlinearity::Relu => "Relu",
            };
            let dirs = if c.bidirectional { 2 } else { 1 };
            attrs.push(("activations", Attr::Strs(vec![f; dirs])));
        }
        RecurrentKind::Lstm => {}
    }
    attrs
}

/// Layer `layer`'s W, R and (with biases) B inputs of ONNX's recurrent operators: every
/// direction's weights stacked, their gate blocks in ONNX's order, the two bias vectors
/// concatenated.
fn layer_weights(
    s: &mut Site,
    kind: RecurrentKind,
    c: &RecurrentConfig,
    layer: usize,
) -> Result<Vec<String>> {
    let dirs = if c.bidirectional { 2 } else { 1 };
    let (mut w, mut r, mut b) = (Vec::new(), Vec::new(), Vec::new());
    for dir in 0..dirs {
        let sfx = if dir == 1 { "_reverse" } else { "" };
        let get = |name: &str| reorder(&s.tensor(&format!("{name}_l{layer}{sfx}"))?, kind);
        w.push(get("weight_ih")?);
        r.push(get("weight_hh")?);
        if c.bias {
            b.push(Tensor::cat(&[get("bias_ih")?, get("bias_hh")?], 0)?);
        }
    }
    let path = s.path.clone();
    let mut names = vec![
        s.g.weight(&format!("{path}/W_l{layer}"), &Tensor::stack(&w, 0)?)?,
        s.g.weight(&format!("{path}/R_l{layer}"), &Tensor::stack(&r, 0)?)?,
    ];
    if c.bias {
        names.push(s.g.weight(&format!("{path}/B_l{layer}"), &Tensor::stack(&b, 0)?)?);
    }
    Ok(names)
}

/// RNN, LSTM or GRU as ONNX's operator, one node per layer, on (N, L, F) or (L, N, F).
fn recurrent(s: &mut Site, kind: RecurrentKind, c: &RecurrentConfig, x: Value) -> Result<Value> {
    let name = match kind {
        RecurrentKind::Rnn(_) => "RNN",
        RecurrentKind::Lstm => "LSTM",
        RecurrentKind::Gru => "GRU",
    };
    if x.dims.len() != 3 || x.dims[2] != c.input_size {
        return Err(s.error(
            name,
            format!(
                "its input would have shape {:?}; the export takes batched 3-D inputs with {} \
                 features",
                x.dims, c.input_size
            ),
        ));
    }
    // ONNX's layout 0: (L, N, F).
    let mut x = if c.batch_first { swap01(s, x)? } else { x };
    let dirs = if c.bidirectional { 2 } else { 1 };
    let h = c.hidden_size;
    let path = s.path.clone();
    for layer in 0..c.num_layers {
        let mut inputs = vec![x.name.clone()];
        inputs.extend(layer_weights(s, kind, c, layer)?);
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let attrs = recurrent_attributes(kind, c);
        // Y: (L, directions, N, H) → (L, N, directions · H).
        let y = s.node(name, &inputs, attrs);
        let y = s.node(
            "Transpose",
            &[&y],
            vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))],
        );
        let merge = s.g.ints(&format!("{path}/merge"), &[0, 0, -1]);
        let y = s.node("Reshape", &[&y, &merge], vec![]);
        x = Value {
            name: y,
            dims: vec![x.dims[0], x.dims[1], dirs * h],
        };
    }
    if c.batch_first {
        swap01(s, x)
    } else {
        Ok(x)
    }
}

/// x + table[:L], L = x's second-to-last dimension, read from the input's shape at run time.
fn add_positions(
    s: &mut Site,
    x: Value,
    table: &str,
    max_len: usize,
    dim: usize,
    kind: &str,
) -> Result<Value> {
    let r = x.dims.len();
    if r < 2 || x.dims[r - 1] != dim || x.dims[r - 2] > max_len {
        return Err(s.error(
            kind,
            format!(
                "its input would have shape {:?}; expected (…, L ≤ {max_len}, {dim})",
                x.dims
            ),
        ));
    }
    let (a, b) = ((r - 2) as i64, (r - 1) as i64);
    let len = s.node(
        "Shape",
        &[&x.name],
        vec![("start", Attr::Int(a)), ("end", Attr::Int(b))],
    );
    let path = s.path.to_string();
    let zero = s.g.ints(&format!("{path}/zero"), &[0]);
    let axes = s.g.ints(&format!("{path}/axes"), &[0]);
    let rows = s.node("Slice", &[table, &zero, &len, &axes], vec![]);
    let name = s.node("Add", &[&x.name, &rows], vec![]);
    Ok(Value { name, ..x })
}

/// `RMSNorm`: x / √(mean(x²) + ε) · weight over the trailing `normalized_shape`.
fn rms_norm(
    s: &mut Site,
    x: Value,
    normalized_shape: &[usize],
    eps: Option<f64>,
    affine: bool,
) -> Result<Value> {
    let k = normalized_shape.len();
    let r = x.dims.len();
    if r < k || x.dims[r - k..] != *normalized_shape {
        return Err(s.error(
            "RMSNorm",
            format!(
                "its input would have shape {:?}; expected (…, {normalized_shape:?})",
                x.dims
            ),
        ));
    }
    // The export is float32, so PyTorch's default ε is float32's machine epsilon.
    let eps = eps.unwrap_or(f32::EPSILON as f64) as f32;
    let sq = s.node("Mul", &[&x.name, &x.name], vec![]);
    let axes: Vec<i64> = (1..=k as i64).map(|a| -a).collect();
    let mean = s.node(
        "ReduceMean",
        &[&sq],
        vec![("axes", Attr::Ints(axes)), ("keepdims", Attr::Int(1))],
    );
    let e = s.scalar("eps", eps);
    let plus = s.node("Add", &[&mean, &e], vec![]);
    let rms = s.node("Sqrt", &[&plus], vec![]);
    let mut name = s.node("Div", &[&x.name, &rms], vec![]);
    if affine {
        let w = s.param("weight")?;
        name = s.node("Mul", &[&name, &w], vec![]);
    }
    Ok(Value { name, ..x })
}
