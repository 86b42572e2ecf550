//! The sequence layers against PyTorch 2.15 (`fixtures/torch_sequence.py`): outputs and the
//! gradients of every input and parameter, in f64 to 1e-8 and f32 to 1e-4, on Taper's CPU
//! kernels and on candle's generic ops; PyTorch's state_dict names load strictly.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use taper_nn::*;
use taper_tensor::{
    with_generic_kernels, DType, Device, LoadMode, ModuleT, ParamStore, Tensor, Var,
};

fn fixture() -> &'static Value {
    static FX: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    FX.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/torch_sequence.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    })
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn shape(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

/// The inputs of a case: float ones as variables of `dt`, boolean ones as u8.
type Inputs = BTreeMap<String, Tensor>;
/// Builds the module over a store and returns the function of the inputs it computes.
type Forward = Box<dyn Fn(&Inputs) -> anyhow::Result<Vec<Tensor>>>;

/// Runs case `name` in `dt` with tolerance `tol` (absolute and relative): the module built
/// by `build` gets PyTorch's parameters (strict load: PyTorch's names), its outputs and
/// every gradient must match.
fn check(name: &str, dt: DType, tol: f64, build: &dyn Fn(&ParamStore) -> anyhow::Result<Forward>) {
    let case = &fixture()["cases"][name];
    let store = ParamStore::new(&Device::Cpu, dt);
    let f = build(&store).unwrap();
    let params: HashMap<String, Tensor> = case["params"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, p)| {
            let t = Tensor::from_vec(floats(&p["data"]), shape(&p["shape"]), &Device::Cpu).unwrap();
            (k.clone(), t)
        })
        .collect();
    store
        .load_state_dict(&params, LoadMode::Strict)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut inputs = Inputs::new();
    let mut vars = Vec::new();
    for (k, v) in case["inputs"].as_object().unwrap() {
        let t = Tensor::from_vec(floats(&v["data"]), shape(&v["shape"]), &Device::Cpu).unwrap();
        let t = if v["dtype"] == "bool" {
            t.to_dtype(DType::U8).unwrap()
        } else {
            let var = Var::from_tensor(&t.to_dtype(dt).unwrap()).unwrap();
            vars.push((k.clone(), var.clone()));
            var.as_tensor().clone()
        };
        inputs.insert(k.clone(), t);
    }
    let outs = f(&inputs).unwrap_or_else(|e| panic!("{name}: {e}"));
    let want = case["outputs"].as_array().unwrap();
    assert_eq!(outs.len(), want.len(), "{name}: outputs");
    let mut loss = Tensor::zeros((), dt, &Device::Cpu).unwrap();
    for (i, (o, w)) in outs.iter().zip(want).enumerate() {
        assert_eq!(o.dims(), shape(&w["shape"]), "{name}: output {i} shape");
        close(
            &format!("{name} {dt:?} output {i}"),
            o,
            &floats(&w["data"]),
            tol,
        );
        let r = Tensor::from_vec(floats(&case["r"][i]), o.shape(), &Device::Cpu)
            .unwrap()
            .to_dtype(dt)
            .unwrap();
        loss = (loss + o.mul(&r).unwrap().sum_all().unwrap()).unwrap();
    }
    let grads = loss.backward().unwrap();
    let want = case["grads"].as_object().unwrap();
    for (k, var) in &vars {
        if let Some(w) = want.get(k) {
            if k == "mask" {
                continue; // a float mask is a constant to Taper's layers
            }
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient for input {k}"));
            close(&format!("{name} {dt:?} d{k}"), g, &floats(w), tol);
        }
    }
    for (k, var) in store.named_parameters() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient for {k}"));
        close(&format!("{name} {dt:?} d{k}"), g, &floats(&want[&k]), tol);
    }
}

fn close(what: &str, t: &Tensor, want: &[f64], tol: f64) {
    let got: Vec<f64> = t
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what} [{i}]: {g} vs PyTorch {w}"
        );
    }
}

/// Every case in f64 (1e-8) and f32 (1e-4), on the CPU kernels and the generic ops.
fn check_all(name: &str, build: &dyn Fn(&ParamStore) -> anyhow::Result<Forward>) {
    for (dt, tol) in [(DType::F64, 1e-8), (DType::F32, 1e-4)] {
        check(name, dt, tol, build);
        with_generic_kernels(|| check(name, dt, tol, build));
    }
}

fn sdpa(causal: bool, scale: Option<f64>) -> impl Fn(&ParamStore) -> anyhow::Result<Forward> {
    move |_| {
        Ok(Box::new(move |i: &Inputs| {
            let y = scaled_dot_product_attention(
                &i["q"],
                &i["k"],
                &i["v"],
                i.get("mask"),
                0.0,
                causal,
                scale,
            )?;
            Ok(vec![y])
        }))
    }
}

#[test]
fn scaled_dot_product_attention_matches_pytorch() {
    check_all("sdpa", &sdpa(false, None));
    check_all("sdpa_causal", &sdpa(true, None));
    check_all("sdpa_cross_scale", &sdpa(false, Some(0.3)));
    check_all("sdpa_bool_mask", &sdpa(false, None));
    check_all("sdpa_float_mask", &sdpa(false, None));
}

#[test]
fn multihead_attention_matches_pytorch() {
    check_all("mha_self_batch_first", &|s| {
        let m = MultiheadAttentionConfig::new(8, 2)
            .batch_first(true)
            .build(s)?;
        Ok(Box::new(move |i: &Inputs| {
            let x = &i["x"];
            let (y, w) = m.attend(x, x, x, AttentionArgs::new().need_weights(true), false)?;
            Ok(vec![y, w.unwrap()])
        }))
    });
    check_all("mha_seq_first_masks", &|s| {
        let m = MultiheadAttentionConfig::new(8, 4).build(s)?;
        Ok(Box::new(move |i: &Inputs| {
            let args = AttentionArgs::new()
                .key_padding_mask(&i["key_padding_mask"])
                .attn_mask(&i["attn_mask"]);
            Ok(vec![m.attend(&i["q"], &i["kv"], &i["kv"], args, false)?.0])
        }))
    });
    check_all("mha_kdim_vdim", &|s| {
        let m = MultiheadAttentionConfig::new(8, 2)
            .batch_first(true)
            .kdim(6)
            .vdim(5)
            .build(s)?;
        Ok(Box::new(move |i: &Inputs| {
            let args = AttentionArgs::new()
                .need_weights(true)
                .average_attn_weights(false);
            let (y, w) = m.attend(&i["q"], &i["k"], &i["v"], args, false)?;
            Ok(vec![y, w.unwrap()])
        }))
    });
    check_all("mha_causal_no_bias", &|s| {
        let m = MultiheadAttentionConfig::new(8, 2)
            .batch_first(true)
            .bias(false)
            .build(s)?;
        Ok(Box::new(move |i: &Inputs| {
            let x = &i["x"];
            Ok(vec![
                m.attend(x, x, x, AttentionArgs::new().is_causal(true), false)?
                    .0,
            ])
        }))
    });
}

/// Bad inputs are errors naming the layer, never panics.
#[test]
fn attention_refuses_bad_shapes_masks_and_heads() {
    let dev = Device::Cpu;
    let q = Tensor::zeros((2, 2, 5, 4), DType::F32, &dev).unwrap();
    let k = Tensor::zeros((2, 2, 6, 4), DType::F32, &dev).unwrap();
    let e = scaled_dot_product_attention(&q, &k, &q, None, 0.0, false, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("scaled_dot_product_attention"), "{e}");
    let mask = Tensor::zeros((3, 5), DType::U8, &dev).unwrap();
    let e = scaled_dot_product_attention(&q, &q, &q, Some(&mask), 0.0, false, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("attn_mask") && e.contains("broadcastable"),
        "{e}"
    );
    let mask = Tensor::zeros((5, 5), DType::I64, &dev).unwrap();
    let e = scaled_dot_product_attention(&q, &q, &q, Some(&mask), 0.0, false, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("boolean mask as u8"), "{e}");
    let store = ParamStore::new(&dev, DType::F32);
    let e = MultiheadAttention::new(10, 3, &store)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("num_heads") && e.contains("divides embed_dim"),
        "{e}"
    );
    let m = MultiheadAttentionConfig::new(8, 2)
        .batch_first(true)
        .build(&store)
        .unwrap();
    let x = Tensor::zeros((2, 5, 8), DType::F32, &dev).unwrap();
    let kpm = Tensor::zeros((2, 4), DType::U8, &dev).unwrap();
    let e = m
        .attend(
            &x,
            &x,
            &x,
            AttentionArgs::new().key_padding_mask(&kpm),
            false,
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("MultiheadAttention(8, 2 heads) (key_padding_mask)") && e.contains("(2, 5)"),
        "{e}"
    );
    let e = m
        .forward_t(&Tensor::zeros((2, 5, 7), DType::F32, &dev).unwrap(), false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("MultiheadAttention(8, 2 heads)"), "{e}");
    // A query whose every key is masked attends to nothing: 0, not NaN.
    let none = Tensor::zeros((5, 5), DType::U8, &dev).unwrap();
    let y = scaled_dot_product_attention(
        &q.ones_like().unwrap(),
        &q,
        &q.ones_like().unwrap(),
        Some(&none),
        0.0,
        false,
        None,
    )
    .unwrap();
    assert_eq!(
        y.abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        0.0
    );
}

#[test]
fn transformer_layers_match_pytorch() {
    let cfg = TransformerConfig::new(8, 2)
        .dim_feedforward(16)
        .dropout(0.0)
        .batch_first(true);
    check_all("encoder_layer_post_relu", &|s| {
        let l = cfg.encoder_layer(s)?;
        Ok(Box::new(move |i: &Inputs| {
            Ok(vec![l.forward_t(&i["x"], false)?])
        }))
    });
    check_all("encoder_layer_pre_gelu_causal", &|s| {
        let l = cfg
            .activation(FeedForwardActivation::Gelu)
            .norm_first(true)
            .encoder_layer(s)?;
        Ok(Box::new(move |i: &Inputs| {
            let args = EncoderArgs {
                is_causal: true,
                ..Default::default()
            };
            Ok(vec![l.encode(&i["x"], args, false)?])
        }))
    });
    check_all("decoder_layer", &|s| {
        let l = cfg.decoder_layer(s)?;
        Ok(Box::new(move |i: &Inputs| {
            let args = DecoderArgs {
                tgt_is_causal: true,
                ..Default::default()
            };
            Ok(vec![l.decode(&i["tgt"], &i["memory"], args, false)?])
        }))
    });
    check_all("encoder_stack", &|s| {
        let enc = cfg.norm_first(true).encoder(2, true, s)?;
        Ok(Box::new(move |i: &Inputs| {
            Ok(vec![enc.forward_t(&i["x"], false)?])
        }))
    });
}

#[test]
fn recurrent_layers_match_pytorch() {
    check_all("rnn_tanh_2l_bi", &|s| {
        let rnn = RecurrentConfig::new(4, 6)
            .num_layers(2)
            .batch_first(true)
            .bidirectional(true)
            .rnn(RnnNonlinearity::Tanh, s)?;
        Ok(Box::new(move |i: &Inputs| {
            let (y, h) = rnn.forward_with(&i["x"], Some(&i["h0"]), false)?;
            Ok(vec![y, h])
        }))
    });
    check_all("rnn_relu", &|s| {
        let rnn = RecurrentConfig::new(4, 6).rnn(RnnNonlinearity::Relu, s)?;
        Ok(Box::new(move |i: &Inputs| {
            let (y, h) = rnn.forward_with(&i["x"], None, false)?;
            Ok(vec![y, h])
        }))
    });
    check_all("lstm_2l_bi", &|s| {
        let lstm = RecurrentConfig::new(4, 6)
            .num_layers(2)
            .batch_first(true)
            .bidirectional(true)
            .lstm(s)?;
        Ok(Box::new(move |i: &Inputs| {
            let (y, (h, c)) = lstm.forward_with(&i["x"], Some((&i["h0"], &i["c0"])), false)?;
            Ok(vec![y, h, c])
        }))
    });
    check_all("lstm_no_bias", &|s| {
        let lstm = RecurrentConfig::new(4, 6).bias(false).lstm(s)?;
        Ok(Box::new(move |i: &Inputs| {
            let (y, (h, c)) = lstm.forward_with(&i["x"], None, false)?;
            Ok(vec![y, h, c])
        }))
    });
    check_all("gru_2l_bi", &|s| {
        let gru = RecurrentConfig::new(4, 6)
            .num_layers(2)
            .batch_first(true)
            .bidirectional(true)
            .gru(s)?;
        Ok(Box::new(move |i: &Inputs| {
            let (y, h) = gru.forward_with(&i["x"], Some(&i["h0"]), false)?;
            Ok(vec![y, h])
        }))
    });
    check_all("gru", &|s| {
        let gru = Gru::new(4, 6, s)?;
        Ok(Box::new(move |i: &Inputs| {
            let (y, h) = gru.forward_with(&i["x"], None, false)?;
            Ok(vec![y, h])
        }))
    });
}

#[test]
fn rms_norm_matches_pytorch() {
    check_all("rmsnorm", &|s| {
        let n = RmsNormConfig::new(&[6]).eps(1e-6).build(s)?;
        Ok(Box::new(move |i: &Inputs| {
            Ok(vec![taper_tensor::Module::forward(&n, &i["x"])?])
        }))
    });
}

/// Wrong states, lengths and ids are errors naming the layer.
#[test]
fn recurrent_and_positional_layers_refuse_bad_inputs() {
    let dev = Device::Cpu;
    let store = ParamStore::new(&dev, DType::F32);
    let lstm = RecurrentConfig::new(4, 6)
        .num_layers(2)
        .batch_first(true)
        .lstm(&store.sub("lstm"))
        .unwrap();
    let x = Tensor::zeros((3, 5, 4), DType::F32, &dev).unwrap();
    let h = Tensor::zeros((1, 3, 6), DType::F32, &dev).unwrap();
    let e = lstm
        .forward_with(&x, Some((&h, &h)), false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("LSTM(4, 6, num_layers=2) (h0)") && e.contains("[2, 3, 6]"),
        "{e}"
    );
    let e = lstm
        .forward_t(&Tensor::zeros((3, 5, 7), DType::F32, &dev).unwrap(), false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("LSTM(4, 6"), "{e}");
    let pos = PositionalEmbedding::new(8, 4, &store.sub("wpe")).unwrap();
    let long = Tensor::zeros((2, 9, 4), DType::F32, &dev).unwrap();
    let e = taper_tensor::Module::forward(&pos, &long)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("9 positions for PositionalEmbedding(8, 4)"),
        "{e}"
    );
    let sin = SinusoidalEncoding::new(8, 4).unwrap();
    assert!(taper_tensor::Module::forward(&sin, &long).is_err());
    let emb = Embedding::new(10, 4, &store.sub("wte")).unwrap();
    let ids = Tensor::new(&[3u32, 10], &dev).unwrap();
    let e = taper_tensor::Module::forward(&emb, &ids)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Embedding(10, 4)") && e.contains("3..=10"),
        "{e}"
    );
}

/// The rotary embedding rotates each pair of halves by p·base^(−2i/D), as its formula says.
#[test]
fn rotary_embedding_is_its_formula() {
    let dev = Device::Cpu;
    let x = Tensor::arange(0f64, 2.0 * 3.0 * 4.0, &dev)
        .unwrap()
        .reshape((2, 3, 4))
        .unwrap();
    let y = apply_rotary(&x, 5, 100.0).unwrap();
    let (xv, yv) = (x.to_vec3::<f64>().unwrap(), y.to_vec3::<f64>().unwrap());
    for b in 0..2 {
        for p in 0..3 {
            for i in 0..2 {
                let a = (5 + p) as f64 * 100f64.powf(-2.0 * i as f64 / 4.0);
                let (x1, x2) = (xv[b][p][i], xv[b][p][i + 2]);
                let want = [x1 * a.cos() - x2 * a.sin(), x2 * a.cos() + x1 * a.sin()];
                assert!((yv[b][p][i] - want[0]).abs() < 1e-12);
                assert!((yv[b][p][i + 2] - want[1]).abs() < 1e-12);
            }
        }
    }
}

fn state_fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/torch_sequence_state.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn fixture_file(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A nested JSON array as a tensor of f32.
fn nested(v: &Value) -> Tensor {
    fn walk(v: &Value, dims: &mut Vec<usize>, depth: usize, out: &mut Vec<f32>) {
        match v {
            Value::Array(items) => {
                if dims.len() == depth {
                    dims.push(items.len());
                }
                for item in items {
                    walk(item, dims, depth + 1, out);
                }
            }
            x => out.push(x.as_f64().unwrap() as f32),
        }
    }
    let (mut dims, mut out) = (Vec::new(), Vec::new());
    walk(v, &mut dims, 0, &mut out);
    Tensor::from_vec(out, dims, &Device::Cpu).unwrap()
}

fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
    assert_eq!(got.dims(), want.dims(), "{what}");
    let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() < 1e-5, "{what}[{i}]: {g} vs torch {w}");
    }
}

/// `fixtures/torch_sequence_state.py`: PyTorch's `state_dict` of a 2-layer pre-norm GELU
/// `TransformerEncoder` with a final norm, and of a 2-layer bidirectional LSTM, saved with
/// safetensors, load strictly into Taper's layers (same names, same order) and give
/// PyTorch's eval-mode outputs to 1e-5, as the MLP round trip does.
#[test]
fn pytorch_state_dicts_of_a_transformer_and_an_lstm_load_and_give_pytorchs_outputs() {
    let fx = state_fixture();
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect()
    };
    // The transformer, with a causal mask.
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let encoder = TransformerConfig::new(16, 4)
        .dim_feedforward(32)
        .activation(FeedForwardActivation::Gelu)
        .batch_first(true)
        .norm_first(true)
        .encoder(2, true, &store)
        .unwrap();
    assert_eq!(store.names(), names(&fx["transformer"]["names"]));
    let report = store
        .load(
            fixture_file("torch_transformer.safetensors"),
            LoadMode::Strict,
        )
        .unwrap();
    assert!(report.is_clean());
    let t = &fx["transformer"];
    let args = EncoderArgs {
        is_causal: true,
        ..Default::default()
    };
    for generic in [false, true] {
        let run = || encoder.encode(&nested(&t["x"]), args, false).unwrap();
        let y = if generic {
            with_generic_kernels(run)
        } else {
            run()
        };
        assert_close(&y, &nested(&t["y"]), "transformer output");
    }
    // The LSTM, from given initial states.
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let lstm = RecurrentConfig::new(6, 8)
        .num_layers(2)
        .batch_first(true)
        .bidirectional(true)
        .dropout(0.2)
        .lstm(&store)
        .unwrap();
    let l = &fx["lstm"];
    assert_eq!(store.names(), names(&l["names"]));
    store
        .load(fixture_file("torch_lstm.safetensors"), LoadMode::Strict)
        .unwrap();
    let (h0, c0) = (nested(&l["h0"]), nested(&l["c0"]));
    let (out, (hn, cn)) = lstm
        .forward_with(&nested(&l["x"]), Some((&h0, &c0)), false)
        .unwrap();
    assert_close(&out, &nested(&l["out"]), "LSTM output");
    assert_close(&hn, &nested(&l["hn"]), "LSTM h_n");
    assert_close(&cn, &nested(&l["cn"]), "LSTM c_n");
}
