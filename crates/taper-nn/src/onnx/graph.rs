//! `GraphBuilder`: the ONNX graph an export writes, node by node: fresh value names, node
//! names from the layer's path in the model (`/0/Gemm`, as `torch.onnx.export` names
//! them), initializers from Taper tensors, and attributes.

use candle_core::{DType, Tensor};

use crate::error::Result;
use crate::onnx::proto::{
    attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, NodeProto, TensorProto,
};

/// An attribute's value, as the exporter writes it.
pub(crate) enum Attr {
    /// `INT`.
    Int(i64),
    /// `INTS`.
    Ints(Vec<i64>),
    /// `FLOAT`.
    Float(f32),
    /// `STRING`.
    Str(&'static str),
    /// `STRINGS`.
    Strs(Vec<&'static str>),
}

/// One attribute.
pub(crate) fn attr(name: &str, value: Attr) -> AttributeProto {
    let mut a = AttributeProto {
        name: name.to_string(),
        ..Default::default()
    };
    match value {
        Attr::Int(i) => {
            a.r#type = AttributeType::Int as i32;
            a.i = i;
        }
        Attr::Ints(v) => {
            a.r#type = AttributeType::Ints as i32;
            a.ints = v;
        }
        Attr::Float(f) => {
            a.r#type = AttributeType::Float as i32;
            a.f = f;
        }
        Attr::Str(s) => {
            a.r#type = AttributeType::String as i32;
            a.s = s.as_bytes().to_vec();
        }
        Attr::Strs(v) => {
            a.r#type = AttributeType::Strings as i32;
            a.strings = v.iter().map(|s| s.as_bytes().to_vec()).collect();
        }
    }
    a
}

/// A float32 tensor proto named `name` holding `values` in `dims`.
pub(crate) fn f32_tensor(name: &str, dims: &[usize], values: &[f32]) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: DataType::Float as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// The nodes and initializers of the graph being written.
#[derive(Default)]
pub(crate) struct GraphBuilder {
    pub(crate) nodes: Vec<NodeProto>,
    pub(crate) initializers: Vec<TensorProto>,
    /// Values already named, for fresh names.
    used: std::collections::HashSet<String>,
}

impl GraphBuilder {
    /// A name not used yet, `base` itself when free.
    fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 1;
        while self.used.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.used.insert(name.clone());
        name
    }

    /// Reserves a name the caller chose (the graph's input).
    pub(crate) fn reserve(&mut self, name: &str) {
        self.used.insert(name.to_string());
    }

    /// A float32 initializer from a Taper tensor (any float dtype, written as f32), named
    /// `name` (its state-dict name, so the file shows PyTorch's names).
    pub(crate) fn weight(&mut self, name: &str, t: &Tensor) -> Result<String> {
        let values = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(self.constant(name, t.dims(), &values))
    }

    /// A float32 initializer from values.
    pub(crate) fn constant(&mut self, name: &str, dims: &[usize], values: &[f32]) -> String {
        let name = self.fresh(name);
        self.initializers.push(f32_tensor(&name, dims, values));
        name
    }

    /// An int64 initializer (shapes, axes, indices).
    pub(crate) fn ints(&mut self, name: &str, values: &[i64]) -> String {
        let name = self.fresh(name);
        self.initializers.push(TensorProto {
            name: name.clone(),
            dims: vec![values.len() as i64],
            data_type: DataType::Int64 as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// A node `op` at `path` (the layer's place in the model, `/3/1`) on `inputs`, with one
    /// output, whose name it returns.
    pub(crate) fn node(
        &mut self,
        path: &str,
        op: &str,
        inputs: &[&str],
        attributes: Vec<AttributeProto>,
    ) -> String {
        self.node_n(path, op, inputs, attributes, 1).remove(0)
    }

    /// A node with `outputs` outputs, whose names it returns.
    pub(crate) fn node_n(
        &mut self,
        path: &str,
        op: &str,
        inputs: &[&str],
        attributes: Vec<AttributeProto>,
        outputs: usize,
    ) -> Vec<String> {
        let name = self.fresh(&format!("{path}/{op}"));
        let outs: Vec<String> = (0..outputs)
            .map(|k| self.fresh(&format!("{name}_output_{k}")))
            .collect();
        self.nodes.push(NodeProto {
            name,
            op_type: op.to_string(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outs.clone(),
            attribute: attributes,
            ..Default::default()
        });
        outs
    }

    /// Renames the value `from` (the last node's output) to `to` (the graph's output name).
    pub(crate) fn rename_output(&mut self, from: &str, to: &str) {
        for node in self.nodes.iter_mut().rev() {
            if let Some(o) = node.output.iter_mut().find(|o| *o == from) {
                *o = to.to_string();
                return;
            }
        }
    }
}
