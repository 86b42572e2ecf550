//! Checks an ONNX model read from a file before anything is built from it: the opset, one
//! input and one output, every tensor's type, dimensions and data length (bounded, so a
//! hostile file cannot make Taper allocate more than the file's own size allows), every
//! node's domain and the values it reads (defined earlier, so the graph is in order), and
//! folds constants (`Constant` nodes, `Transpose` of an initializer) into tensors.

use std::collections::{HashMap, HashSet};

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::onnx::proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, type_proto, AttributeProto, ModelProto,
    NodeProto, TensorProto,
};

/// The opsets of the default domain whose operators the importer reads with one meaning.
pub(crate) const OPSETS: std::ops::RangeInclusive<i64> = 13..=23;

/// The most elements one tensor may have (2^28: 1 GiB of float32).
const MAX_ELEMENTS: usize = 1 << 28;

/// The largest input dimension the import traces shapes with, and the most elements of
/// one traced input.
const MAX_INPUT_DIM: usize = 1 << 16;
const MAX_INPUT_ELEMENTS: usize = 1 << 24;

/// A checked graph: its nodes in order, its constants, its input and output.
pub(crate) struct Checked {
    /// The graph's input name.
    pub(crate) input: String,
    /// Its dimensions, the batch (dimension 0) as 1.
    pub(crate) input_dims: Vec<usize>,
    /// Whether the input holds integer token ids.
    pub(crate) ids: bool,
    /// The graph's output name.
    pub(crate) output: String,
    /// The default domain's opset.
    pub(crate) opset: i64,
    /// The nodes that compute (constants folded away), in order.
    pub(crate) nodes: Vec<NodeProto>,
    /// Initializers and folded constants, as tensors (float as f64, ints as i64).
    pub(crate) constants: HashMap<String, Tensor>,
}

/// An error about the file as a whole.
pub(crate) fn file_error(reason: impl Into<String>) -> Error {
    Error::Onnx {
        at: "model".into(),
        reason: reason.into(),
    }
}

/// An error naming a node and its operator.
pub(crate) fn node_error(node: &NodeProto, reason: impl Into<String>) -> Error {
    let name = if node.name.is_empty() {
        node.output.first().map(String::as_str).unwrap_or("?")
    } else {
        &node.name
    };
    Error::Onnx {
        at: format!("node `{name}` ({})", node.op_type),
        reason: reason.into(),
    }
}

/// Validates `model` and folds its constants.
pub(crate) fn check(model: &ModelProto) -> Result<Checked> {
    let opset = default_opset(model)?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| file_error("the model has no graph"))?;
    if !graph.sparse_initializer.is_empty() {
        return Err(file_error("sparse initializers are not supported"));
    }
    let mut constants = HashMap::new();
    for t in &graph.initializer {
        if t.name.is_empty() || constants.contains_key(&t.name) {
            return Err(file_error(format!(
                "initializer name `{}` is empty or repeated",
                t.name
            )));
        }
        constants.insert(
            t.name.clone(),
            tensor(t, &format!("initializer `{}`", t.name))?,
        );
    }
    let (input, input_dims, ids) = graph_input(model, &constants)?;
    if graph.output.len() != 1 {
        return Err(file_error(format!(
            "the graph has {} outputs; expected 1",
            graph.output.len()
        )));
    }
    let output = graph.output[0].name.clone();
    let mut defined: HashSet<String> = constants.keys().cloned().collect();
    defined.insert(input.clone());
    let mut nodes = Vec::new();
    for node in &graph.node {
        check_node(node, &defined)?;
        if let Some(folded) = fold(node, &constants)? {
            defined.insert(node.output[0].clone());
            constants.insert(node.output[0].clone(), folded);
            continue;
        }
        defined.extend(node.output.iter().filter(|o| !o.is_empty()).cloned());
        nodes.push(node.clone());
    }
    if !defined.contains(&output) {
        return Err(file_error(format!(
            "the graph output `{output}` is computed by no node"
        )));
    }
    Ok(Checked {
        input,
        input_dims,
        ids,
        output,
        opset,
        nodes,
        constants,
    })
}

/// The default domain's opset, which must be one the importer reads.
fn default_opset(model: &ModelProto) -> Result<i64> {
    let version = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| file_error("no opset for the default ONNX domain"))?;
    if !OPSETS.contains(&version) {
        return Err(file_error(format!(
            "opset {version}; expected {} to {}",
            OPSETS.start(),
            OPSETS.end()
        )));
    }
    Ok(version)
}

/// The one graph input that is not an initializer: its name, dimensions (batch as 1) and
/// whether it holds token ids.
fn graph_input(
    model: &ModelProto,
    constants: &HashMap<String, Tensor>,
) -> Result<(String, Vec<usize>, bool)> {
    let graph = model.graph.as_ref().expect("checked by the caller");
    let inputs: Vec<_> = graph
        .input
        .iter()
        .filter(|i| !constants.contains_key(&i.name))
        .collect();
    let [input] = inputs[..] else {
        return Err(file_error(format!(
            "the graph has {} inputs besides its initializers; expected 1",
            inputs.len()
        )));
    };
    let at = format!("graph input `{}`", input.name);
    let Some(type_proto::Value::TensorType(t)) =
        input.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(file_error(format!("{at} is not a tensor")));
    };
    let ids = match DataType::try_from(t.elem_type) {
        Ok(DataType::Float) | Ok(DataType::Double) => false,
        Ok(DataType::Int64) | Ok(DataType::Int32) => true,
        _ => {
            return Err(file_error(format!(
                "{at} has element type {}; expected float, double or integer ids",
                t.elem_type
            )))
        }
    };
    let shape = t
        .shape
        .as_ref()
        .ok_or_else(|| file_error(format!("{at} has no shape")))?;
    let mut dims = Vec::new();
    for (k, d) in shape.dim.iter().enumerate() {
        use crate::onnx::proto::tensor_shape_proto::dimension::Value as D;
        let v = match (&d.value, k) {
            (_, 0) => 1,
            (Some(D::DimValue(v)), _) if *v > 0 && (*v as usize) <= MAX_INPUT_DIM => *v as usize,
            _ => {
                return Err(file_error(format!(
                    "{at}: dimension {k} must be a fixed size from 1 to {MAX_INPUT_DIM} (only \
                     the batch, dimension 0, may be symbolic)"
                )))
            }
        };
        dims.push(v);
    }
    let n = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if dims.is_empty() || n.is_none_or(|n| n > MAX_INPUT_ELEMENTS) {
        return Err(file_error(format!(
            "{at}: shape {dims:?} must have a batch dimension and at most {MAX_INPUT_ELEMENTS} \
             elements per example"
        )));
    }
    Ok((input.name.clone(), dims, ids))
}

/// A node's domain, outputs and inputs.
fn check_node(node: &NodeProto, defined: &HashSet<String>) -> Result<()> {
    if !(node.domain.is_empty() || node.domain == "ai.onnx") {
        return Err(node_error(
            node,
            format!("domain `{}` is not supported", node.domain),
        ));
    }
    if node.output.is_empty() || node.output[0].is_empty() {
        return Err(node_error(node, "has no output"));
    }
    for o in node.output.iter().filter(|o| !o.is_empty()) {
        if defined.contains(o) {
            return Err(node_error(node, format!("output `{o}` is already defined")));
        }
    }
    for i in node.input.iter().filter(|i| !i.is_empty()) {
        if !defined.contains(i) {
            return Err(node_error(
                node,
                format!("reads `{i}`, which no earlier node, initializer or input defines"),
            ));
        }
    }
    Ok(())
}

/// A node whose result is a constant: `Constant`, or `Transpose` of a constant (how an
/// exporter writes a transposed weight). Other nodes compute.
fn fold(node: &NodeProto, constants: &HashMap<String, Tensor>) -> Result<Option<Tensor>> {
    match node.op_type.as_str() {
        "Constant" => constant(node).map(Some),
        "Transpose" if node.input.len() == 1 && constants.contains_key(&node.input[0]) => {
            transposed(node, &constants[&node.input[0]]).map(Some)
        }
        _ => Ok(None),
    }
}

/// A `Constant` node's value: its `value` tensor, or `value_float(s)` / `value_int(s)`, the
/// attribute's type checked.
fn constant(node: &NodeProto) -> Result<Tensor> {
    let [a] = &node.attribute[..] else {
        return Err(node_error(node, "expected exactly one attribute"));
    };
    let want = match a.name.as_str() {
        "value" => AttributeType::Tensor,
        "value_float" => AttributeType::Float,
        "value_floats" => AttributeType::Floats,
        "value_int" => AttributeType::Int,
        "value_ints" => AttributeType::Ints,
        other => {
            return Err(node_error(
                node,
                format!(
                    "attribute `{other}` is not supported; expected `value`, `value_float(s)` \
                     or `value_int(s)`"
                ),
            ))
        }
    };
    if a.r#type != want as i32 {
        return Err(node_error(
            node,
            format!(
                "attribute `{}` has type {}; expected {want:?}",
                a.name, a.r#type
            ),
        ));
    }
    let dev = &Device::Cpu;
    Ok(match want {
        AttributeType::Tensor => match a.t.as_ref() {
            Some(t) => tensor(t, &format!("node `{}`", node.name))?,
            None => return Err(node_error(node, "attribute `value` holds no tensor")),
        },
        AttributeType::Float => Tensor::new(a.f as f64, dev)?,
        AttributeType::Floats => {
            Tensor::new(a.floats.iter().map(|&v| v as f64).collect::<Vec<_>>(), dev)?
        }
        AttributeType::Int => Tensor::new(a.i, dev)?,
        _ => Tensor::new(a.ints.as_slice(), dev)?,
    })
}

/// A `Transpose` node's result on the constant `t`.
fn transposed(node: &NodeProto, t: &Tensor) -> Result<Tensor> {
    let rank = t.rank();
    let perm = match find_attr(node, "perm") {
        Some(a) => ints(node, a)?,
        None => (0..rank as i64).rev().collect(),
    };
    let mut seen = vec![false; rank];
    let valid = perm.len() == rank
        && perm.iter().all(|&p| {
            p >= 0 && (p as usize) < rank && !std::mem::replace(&mut seen[p as usize], true)
        });
    if !valid {
        return Err(node_error(
            node,
            format!("perm {perm:?} is not a permutation"),
        ));
    }
    let perm: Vec<usize> = perm.iter().map(|&p| p as usize).collect();
    Ok(t.permute(perm)?.contiguous()?)
}

/// The attribute `name` of `node`.
pub(crate) fn find_attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

/// An `INTS` attribute's values.
pub(crate) fn ints(node: &NodeProto, a: &AttributeProto) -> Result<Vec<i64>> {
    if a.r#type != AttributeType::Ints as i32 {
        return Err(node_error(
            node,
            format!("attribute `{}` must be ints", a.name),
        ));
    }
    Ok(a.ints.clone())
}

/// A tensor proto as a tensor (float and double as f64, integers as i64), after checking
/// its type, dimensions and that its data holds exactly that many elements.
fn tensor(t: &TensorProto, at: &str) -> Result<Tensor> {
    let err = |reason: String| file_error(format!("{at}: {reason}"));
    let n = element_count(t, at)?;
    let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
    let raw = !t.raw_data.is_empty();
    let count = |len: usize, what: &str| {
        if len == n {
            Ok(())
        } else {
            Err(err(format!(
                "holds {len} {what} for dimensions {dims:?} ({n} elements)"
            )))
        }
    };
    // Raw data: a whole number of `size`-byte elements, as many as the dimensions say.
    let raw_count = |size: usize, what: &str| {
        if t.raw_data.len() % size != 0 {
            return Err(err(format!("raw data is not a whole number of {what}")));
        }
        count(t.raw_data.len() / size, what)
    };
    let dev = &Device::Cpu;
    let floats = |v: Vec<f64>| Tensor::from_vec(v, dims.as_slice(), dev);
    let t = match DataType::try_from(t.data_type) {
        Ok(DataType::Float) if raw => {
            raw_count(4, "floats")?;
            floats(
                le_chunks::<4>(&t.raw_data)
                    .map(|b| f32::from_le_bytes(b) as f64)
                    .collect(),
            )?
        }
        Ok(DataType::Float) => {
            count(t.float_data.len(), "floats")?;
            floats(t.float_data.iter().map(|&v| v as f64).collect())?
        }
        Ok(DataType::Double) if raw => {
            raw_count(8, "doubles")?;
            floats(
                le_chunks::<8>(&t.raw_data)
                    .map(f64::from_le_bytes)
                    .collect(),
            )?
        }
        Ok(DataType::Double) => {
            count(t.double_data.len(), "doubles")?;
            floats(t.double_data.clone())?
        }
        Ok(DataType::Int64) => {
            let v: Vec<i64> = if raw {
                raw_count(8, "int64s")?;
                le_chunks::<8>(&t.raw_data)
                    .map(i64::from_le_bytes)
                    .collect()
            } else {
                count(t.int64_data.len(), "int64s")?;
                t.int64_data.clone()
            };
            Tensor::from_vec(v, dims.as_slice(), dev)?
        }
        _ => {
            return Err(err(format!(
                "element type {} is not supported (float, double or int64)",
                t.data_type
            )))
        }
    };
    Ok(t)
}

/// How many elements a tensor proto's dimensions hold, after checking that its data is in
/// the file (not external or segmented) and that the count is in bounds.
fn element_count(t: &TensorProto, at: &str) -> Result<usize> {
    let err = |reason: String| file_error(format!("{at}: {reason}"));
    if t.data_location != 0 || !t.external_data.is_empty() {
        return Err(err(
            "external data is not supported (save with the weights inside)".into(),
        ));
    }
    if t.segment.is_some() {
        return Err(err("segmented tensors are not supported".into()));
    }
    let mut n = 1usize;
    for &d in &t.dims {
        if d < 0 {
            return Err(err(format!("negative dimension in {:?}", t.dims)));
        }
        n = n
            .checked_mul(d as usize)
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| {
                err(format!(
                    "dimensions {:?} exceed {MAX_ELEMENTS} elements",
                    t.dims
                ))
            })?;
    }
    Ok(n)
}

/// `bytes` in little-endian chunks of `N`.
fn le_chunks<const N: usize>(bytes: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    bytes
        .chunks_exact(N)
        .map(|c| c.try_into().expect("chunks_exact gives N bytes"))
}

/// The float values of a constant as f64, or an error naming the node.
pub(crate) fn as_f64(node: &NodeProto, name: &str, t: &Tensor) -> Result<Tensor> {
    if t.dtype() != DType::F64 {
        return Err(node_error(node, format!("`{name}` must be a float tensor")));
    }
    Ok(t.clone())
}
