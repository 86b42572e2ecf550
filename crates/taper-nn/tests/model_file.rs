//! Whole-model files: every layer kind round-trips (the rebuilt model computes the same
//! outputs, BatchNorm's running statistics included); a file naming an unknown kind, a
//! wrong field, other weights or a custom layer is an error naming it.

use taper_nn::*;
use taper_tensor::{manual_seed, randn, DType, Device, ModuleT, ParamStore, Tensor};

fn dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("taper-model-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn cnn(store: &ParamStore) -> Sequential {
    Sequential::new(store)
        .append_with(|s| {
            Conv2dConfig::new(1, 4, (3, 3))
                .padding(1)
                .bias(false)
                .build(s)
        })
        .unwrap()
        .append_with(|s| BatchNorm::new_2d(4, s))
        .unwrap()
        .append(Activation::LeakyRelu(0.1))
        .append(MaxPool2d::new(2))
        .append(AvgPool2d::new(2).stride(1))
        .append(Flatten::default())
        .append_with(|s| {
            Sequential::new(s)
                .append_with(|s| LinearConfig::new(4 * 3 * 3, 6).bias(false).build(s))?
                .append_with(|s| {
                    LayerNormConfig::new(&[6])
                        .eps(1e-3)
                        .elementwise_affine(true)
                        .build(s)
                })?
                .append(Activation::Softmax(-1))
                .append(Dropout::new(0.3)?)
                .append_with(|s| Linear::new(6, 3, s))
        })
        .unwrap()
}

#[test]
fn every_layer_kind_round_trips() {
    manual_seed(3);
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let model = cnn(&store);
    let x = randn((5, 1, 8, 8), 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
    model.forward_t(&x, true).unwrap(); // moves BatchNorm's running statistics
    let d = dir("kinds");
    let path = d.join("model.safetensors");
    model.save_model(&path).unwrap();
    let json = std::fs::read_to_string(d.join("model.json")).unwrap();
    assert!(
        json.contains("\"format\": \"taper-model/1\"") && json.contains("\"kind\": \"Conv2d\"")
    );
    let (loaded, loaded_store) = Sequential::load_model(&path, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(loaded_store.names(), store.names());
    let (a, b) = (
        model
            .forward_t(&x, false)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap(),
        loaded
            .forward_t(&x, false)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap(),
    );
    assert_eq!(a, b);
    assert_eq!(loaded.spec().unwrap(), model.spec().unwrap());
    // An embedding model too.
    let s2 = ParamStore::new(&Device::Cpu, DType::F32);
    let emb = Sequential::new(&s2)
        .append_with(|s| Embedding::new(7, 3, s))
        .unwrap();
    emb.save_model(d.join("emb.safetensors")).unwrap();
    let (e2, _) =
        Sequential::load_model(d.join("emb.safetensors"), &Device::Cpu, DType::F32).unwrap();
    let ids = Tensor::new(&[1u32, 6], &Device::Cpu).unwrap();
    assert_eq!(
        e2.forward_t(&ids, false).unwrap().to_vec2::<f32>().unwrap(),
        emb.forward_t(&ids, false)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap()
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn unsafe_or_mismatched_files_are_refused_by_name() {
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let model = Sequential::new(&store)
        .append_with(|s| Linear::new(3, 2, s))
        .unwrap();
    let d = dir("bad");
    let path = d.join("m.safetensors");
    model.save_model(&path).unwrap();
    let good = std::fs::read_to_string(d.join("m.json")).unwrap();
    let load = || Sequential::load_model(&path, &Device::Cpu, DType::F32).map(|_| ());
    for (what, text, needle) in [
        (
            "unknown kind",
            good.replace("\"Linear\"", "\"Pickle\""),
            "unknown variant `Pickle`",
        ),
        (
            "wrong field type",
            good.replace("\"in_features\": 3", "\"in_features\": \"3\""),
            "in_features",
        ),
        (
            "extra field",
            good.replace("\"bias\": true", "\"bias\": true, \"exec\": 1"),
            "exec",
        ),
        (
            "format",
            good.replace("taper-model/1", "taper-model/9"),
            "format",
        ),
        (
            "other weights",
            good.replace("\"weights_sha256\": \"", "\"weights_sha256\": \"0"),
            "SHA-256",
        ),
    ] {
        std::fs::write(d.join("m.json"), text).unwrap();
        let err = load().unwrap_err().to_string();
        assert!(err.contains(needle), "{what}: {err}");
    }
    std::fs::write(d.join("m.json"), &good).unwrap();
    load().unwrap();
    // Architecture and weights that disagree (shape) fail on the strict load.
    std::fs::write(
        d.join("m.json"),
        good.replace("\"out_features\": 2", "\"out_features\": 4"),
    )
    .unwrap();
    assert!(load().is_err());
    // A custom layer cannot be saved; the error names it.
    #[derive(Debug)]
    struct Mine;
    impl taper_tensor::Module for Mine {
        fn forward(&self, x: &Tensor) -> taper_tensor::candle::Result<Tensor> {
            Ok(x.clone())
        }
    }
    let custom = Sequential::new(&store).append(Mine);
    let err = custom
        .save_model(d.join("c.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("child 0 (Mine)"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

mod custom {
    use serde::{Deserialize, Serialize};
    use taper_nn::{register_layer, CustomLayer, Linear, Sequential};
    use taper_tensor::{candle, DType, Device, Module, ModuleT, ParamStore, Tensor};

    /// y = x + scale·fc(x)
    pub struct Scaled {
        fc: Linear,
        scale: Tensor,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ScaledConfig {
        pub dim: usize,
    }

    impl Module for Scaled {
        fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
            x + self.fc.forward(x)?.broadcast_mul(&self.scale)?
        }
    }

    impl CustomLayer for Scaled {
        const KIND: &'static str = "Scaled";
        type Config = ScaledConfig;
        fn config(&self) -> ScaledConfig {
            ScaledConfig {
                dim: self.fc.in_features(),
            }
        }
        fn from_config(
            c: ScaledConfig,
            store: &ParamStore,
        ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
            if c.dim == 0 {
                return Err("dim must be positive".into());
            }
            Ok(Scaled {
                fc: Linear::new(c.dim, c.dim, &store.sub("fc"))?,
                scale: store.parameter("scale", 1, |s, dt, d| Ok(Tensor::ones(s, dt, d)?))?,
            })
        }
    }

    /// A user-defined layer round-trips through a model file once registered; unregistered
    /// kinds, foreign configurations and clashing names are errors naming the layer.
    #[test]
    fn a_registered_custom_layer_round_trips_and_bad_files_name_the_layer() {
        register_layer::<Scaled>().unwrap();
        register_layer::<Scaled>().unwrap(); // again: a no-op
        let store = ParamStore::new(&Device::Cpu, DType::F32);
        let model = Sequential::new(&store)
            .append_with(|s| Scaled::from_config(ScaledConfig { dim: 3 }, s))
            .unwrap()
            .append(taper_nn::Activation::Tanh)
            .append_with(|s| {
                Sequential::new(s).append_with(|s| Scaled::from_config(ScaledConfig { dim: 3 }, s))
            })
            .unwrap();
        let dir = std::env::temp_dir().join(format!("taper-custom-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.safetensors");
        model.save_model(&path).unwrap();
        let json = std::fs::read_to_string(dir.join("model.json")).unwrap();
        assert!(
            json.contains("\"kind\": \"Custom\"") && json.contains("\"name\": \"Scaled\""),
            "{json}"
        );
        let (loaded, _) = Sequential::load_model(&path, &Device::Cpu, DType::F32).unwrap();
        let x = Tensor::new(&[[0.5f32, -1.0, 2.0]], &Device::Cpu).unwrap();
        assert_eq!(
            loaded
                .forward_t(&x, false)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap(),
            model
                .forward_t(&x, false)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap()
        );
        assert!(loaded.summary(&[3]).unwrap().contains(" 0 (Scaled) "));

        // A file naming a kind nobody registered, and one whose configuration the type
        // refuses: errors naming the layer's path, before any model is returned.
        let edit = |from: &str, to: &str| {
            std::fs::write(dir.join("model.json"), json.replacen(from, to, 1)).unwrap();
            Sequential::load_model(&path, &Device::Cpu, DType::F32)
                .unwrap_err()
                .to_string()
        };
        let e = edit("\"name\": \"Scaled\"", "\"name\": \"Unknown\"");
        assert!(
            e.contains("layers[0]") && e.contains("`Unknown`") && e.contains("register_layer"),
            "{e}"
        );
        let e = edit("\"dim\": 3", "\"dim\": 3, \"extra\": 1");
        assert!(e.contains("layers[0]") && e.contains("extra"), "{e}");
        let nested = json.rfind("\"dim\": 3").unwrap();
        let mut bad = json.clone();
        bad.replace_range(nested..nested + 8, "\"dim\": 0");
        std::fs::write(dir.join("model.json"), bad).unwrap();
        let e = Sequential::load_model(&path, &Device::Cpu, DType::F32)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("layers[2].layers[0]") && e.contains("dim must be positive"),
            "{e}"
        );

        // A name that one of Taper's kinds has is refused.
        struct Clash;
        impl Module for Clash {
            fn forward(&self, x: &Tensor) -> candle::Result<Tensor> {
                Ok(x.clone())
            }
        }
        impl CustomLayer for Clash {
            const KIND: &'static str = "Linear";
            type Config = ();
            fn config(&self) {}
            fn from_config(
                _: (),
                _: &ParamStore,
            ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
                Ok(Clash)
            }
        }
        assert!(register_layer::<Clash>().is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A language-model-like stack of every sequence layer kind: saved, rebuilt from `model.json`
/// alone, the same outputs; `summary` lists each kind with its parameter count.
#[test]
fn sequence_layer_kinds_round_trip_and_summarize() {
    manual_seed(5);
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let tcfg = TransformerConfig::new(16, 4)
        .dim_feedforward(32)
        .batch_first(true)
        .norm_first(true)
        .activation(FeedForwardActivation::Gelu);
    let rcfg = RecurrentConfig::new(16, 8).batch_first(true);
    let model = Sequential::new(&store)
        .append_with(|s| Embedding::new(11, 16, s))
        .unwrap()
        .append_with(|s| PositionalEmbedding::new(12, 16, s))
        .unwrap()
        .append(SinusoidalEncoding::new(12, 16).unwrap())
        .append_with(|s| tcfg.encoder(2, true, s))
        .unwrap()
        .append_with(|s| tcfg.decoder_layer(s))
        .unwrap()
        .append_with(|s| tcfg.encoder_layer(s))
        .unwrap()
        .append_with(|s| {
            MultiheadAttentionConfig::new(16, 2)
                .batch_first(true)
                .build(s)
        })
        .unwrap()
        .append_with(|s| RmsNormConfig::new(&[16]).eps(1e-6).build(s))
        .unwrap()
        .append_with(|s| rcfg.num_layers(2).bidirectional(true).lstm(s))
        .unwrap()
        .append_with(|s| RecurrentConfig::new(16, 8).batch_first(true).gru(s))
        .unwrap()
        .append_with(|s| {
            RecurrentConfig::new(8, 4)
                .batch_first(true)
                .rnn(RnnNonlinearity::Relu, s)
        })
        .unwrap()
        .append_with(|s| Linear::new(4, 11, s))
        .unwrap();
    let ids = Tensor::new(&[[1u32, 2, 3, 4, 5], [6, 7, 8, 9, 10]], &Device::Cpu).unwrap();
    let d = dir("sequence");
    let path = d.join("lm.safetensors");
    model.save_model(&path).unwrap();
    let json = std::fs::read_to_string(path.with_extension("json")).unwrap();
    for kind in [
        "TransformerEncoder",
        "TransformerDecoderLayer",
        "MultiheadAttention",
        "Recurrent",
        "RmsNorm",
        "PositionalEmbedding",
        "SinusoidalEncoding",
    ] {
        assert!(json.contains(&format!("\"kind\": \"{kind}\"")), "{kind}");
    }
    let (loaded, loaded_store) = Sequential::load_model(&path, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(loaded_store.names(), store.names());
    assert_eq!(loaded.spec().unwrap(), model.spec().unwrap());
    let a = model.forward_t(&ids, false).unwrap();
    let b = loaded.forward_t(&ids, false).unwrap();
    assert_eq!(a.dims(), &[2, 5, 11]);
    assert_eq!(
        a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
    // The summary names every kind and counts every parameter once.
    let summary = model.summary(&[5]).unwrap();
    let total = store.num_parameters();
    assert!(
        summary.contains(&format!("Total params: {}", thousands(total))),
        "{summary}"
    );
    for kind in [
        "TransformerEncoder",
        "(LSTM)",
        "(GRU)",
        "(RNN)",
        "(RMSNorm)",
    ] {
        assert!(summary.contains(kind), "{kind} missing in\n{summary}");
    }
    let _ = std::fs::remove_dir_all(&d);
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
