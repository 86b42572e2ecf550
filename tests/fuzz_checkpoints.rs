//! Structure-aware fuzzing of every checkpoint file, in a child process with a memory cap.
//!
//! Byte flips mostly die at the first checksum. These mutations understand the formats:
//! they edit the safetensors header of the weights (dtypes, shapes, offsets, names), the
//! scalars of the optimizer and piece states (NaN, ±∞, negative, fractional, 2⁶⁴, strings),
//! and the fields of `trainer.json` (types, ranges, duplicates), and then, in most cases,
//! re-sign the checkpoint (recompute the SHA-256s) so that the mutation reaches the
//! validators behind the checksum. For each case:
//!
//! - loading and restoring must give `Ok` or an error, never a panic, abort or hang;
//! - a failed restore must leave the model, the optimizer and every piece as they were;
//! - after a clean restore, one more training step must run.
//!
//! `TAPER_FUZZ_CASES` sets the cases per format (default 5,000, the CI budget). The child
//! runs with a 2 GiB address-space limit, so a file that makes a reader allocate by what
//! it claims fails the test instead of the machine.

mod common;

use std::path::Path;

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use sha2::Digest;
use taper::nn::{Linear, Sequential};
use taper::optim::{Adam, CosineAnnealingLr, LrScheduler, Optimizer};
use taper::prelude::*;
use taper::train::{Checkpoint, Direction, EarlyStopping, TrainState};

use common::{run_capped_fuzz_child, weight_bits, TmpDir};

const CHILD: &str = "TAPER_FUZZ_CHILD";
const FILES: [&str; 4] = [
    "model.safetensors",
    "optimizer.safetensors",
    "state.safetensors",
    "trainer.json",
];

fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

struct Pieces {
    store: ParamStore,
    opt: Optimizer<Adam>,
    sched: LrScheduler<CosineAnnealingLr>,
    early: EarlyStopping,
}

fn pieces(seed: u64) -> Pieces {
    manual_seed(seed);
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let _ = Sequential::new(&store)
        .append_with(|s| Linear::new(3, 4, s))
        .unwrap();
    let mut opt = Optimizer::new(Adam::new(0.1), &store).unwrap();
    let sched = LrScheduler::new(CosineAnnealingLr::new(20), &mut opt).unwrap();
    let early = EarlyStopping::new(5, 0.0, Direction::Minimize, true).unwrap();
    Pieces {
        store,
        opt,
        sched,
        early,
    }
}

fn one_step(p: &mut Pieces) -> taper::optim::Result<()> {
    let w = p.store.var("0.weight")?;
    let loss = w.as_tensor().sqr()?.sum_all()?;
    p.opt.step(&Gradients::compute(&loss, &p.store)?)?;
    p.sched.step(&mut p.opt)?;
    Ok(())
}

/// Everything a failed restore must not change.
fn snapshot(p: &Pieces) -> String {
    let mut sd = taper::tensor::StateDict::default();
    p.sched.save_state("s", &mut sd).unwrap();
    p.early.save_state("e", &mut sd).unwrap();
    let weights = weight_bits(&p.store);
    let st = p.opt.state_dict().unwrap();
    format!(
        "{weights:?} {:?} {:?} {:?} {:?}",
        st.scalars,
        st.tensors.keys().collect::<Vec<_>>(),
        sd.scalars,
        p.opt.groups()[0].rule
    )
}

fn good_checkpoint(dir: &Path) {
    let mut p = pieces(1);
    for _ in 0..3 {
        one_step(&mut p).unwrap();
    }
    p.early.update(0.5, &p.store).unwrap();
    let mut st = TrainState::new(9);
    st.step = 3;
    st.batches_per_epoch = Some(5);
    st.batch_in_epoch = 3;
    st.metadata = json!({"note": "fuzz", "best_metric": 0.5});
    Checkpoint::capture(&p.store, &p.opt, st)
        .unwrap()
        .add_state("sched", &p.sched)
        .unwrap()
        .add_state("early", &p.early)
        .unwrap()
        .save(dir)
        .unwrap();
}

/// Recomputes the checksums of `trainer.json` after a mutation, so that the mutation
/// reaches the validators.
fn resign(dir: &Path) {
    let Ok(text) = std::fs::read(dir.join("trainer.json")) else {
        return;
    };
    let Ok(mut v) = serde_json::from_slice::<Value>(&text) else {
        return;
    };
    let Some(obj) = v.as_object_mut() else {
        return;
    };
    let mut files = serde_json::Map::new();
    for f in &FILES[..3] {
        if let Ok(b) = std::fs::read(dir.join(f)) {
            files.insert(f.to_string(), sha256_hex(&b).into());
        }
    }
    obj.insert("files".into(), Value::Object(files));
    obj.remove("sha256");
    let digest = sha256_hex(&serde_json::to_vec(&v).unwrap());
    v.as_object_mut()
        .unwrap()
        .insert("sha256".into(), digest.into());
    std::fs::write(dir.join("trainer.json"), serde_json::to_vec(&v).unwrap()).unwrap();
}

fn split_safetensors(bytes: &[u8]) -> (Value, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header, bytes[8 + n..].to_vec())
}

fn join_safetensors(header: &Value, data: &[u8]) -> Vec<u8> {
    let h = serde_json::to_vec(header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    out
}

/// The tensor names of a safetensors header.
fn tensor_names(header: &Value) -> Vec<String> {
    header
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect()
}

fn weird_number(rng: &mut ChaCha8Rng) -> String {
    [
        "NaN",
        "inf",
        "-inf",
        "-1",
        "-0.0",
        "2.5",
        "0.5",
        "18446744073709551616",
        "9007199254740993",
        "1e308",
        "1e-320",
        "+1",
        "",
        " 1",
        "0x10",
        "1_000",
        "nan",
        "infinity",
        "99999999999999999999999999999999",
        "3",
        "0",
        "1",
        "20",
        "21",
    ]
    .choose(rng)
    .unwrap()
    .to_string()
}

fn weird_json(rng: &mut ChaCha8Rng) -> Value {
    match rng.random_range(0..16) {
        0 => json!(-1),
        1 => json!(18446744073709551615u64),
        2 => json!(9007199254740993u64),
        3 => json!(2.5),
        4 => json!(1e300),
        5 => Value::Null,
        6 => json!("7"),
        7 => json!([1, 2]),
        8 => json!({"a": 1}),
        9 => json!(true),
        10 => json!("+".repeat(rng.random_range(1..80))),
        11 => json!("f".repeat(64)),
        12 => json!(format!("+{}", "0".repeat(63))),
        13 => json!(rng.random_range(0..10u64)),
        14 => json!("295147905179352825856"),
        _ => json!(rng.random::<u64>()),
    }
}

/// Mutates the weights' safetensors header.
fn mutate_model(bytes: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let (mut header, data) = split_safetensors(bytes);
    let names = tensor_names(&header);
    let name = names.choose(rng).unwrap().clone();
    let dtypes = [
        "F32", "F64", "F16", "BF16", "I64", "I32", "U8", "U32", "BOOL", "F8_E4M3", "F8_E5M2",
        "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64", "X",
    ];
    for _ in 0..rng.random_range(1..3) {
        let entry = &mut header[&name];
        match rng.random_range(0..8) {
            0 => entry["dtype"] = json!(dtypes.choose(rng).unwrap()),
            1 => {
                let dims: Vec<u64> = (0..rng.random_range(0..4))
                    .map(|_| *[0u64, 1, 3, 4, 12, 1 << 40].choose(rng).unwrap())
                    .collect();
                entry["shape"] = json!(dims);
            }
            2 => {
                let a = rng.random_range(0..data.len() as u64 + 64);
                let b = rng.random_range(0..data.len() as u64 + 64);
                entry["data_offsets"] = json!([a, b]);
            }
            3 => entry["shape"] = weird_json(rng),
            4 => {
                let v = header.as_object_mut().unwrap().remove(&name).unwrap();
                let other = names.choose(rng).unwrap().clone();
                header[format!("{other}{}", ["", "x", ".", " "].choose(rng).unwrap())] = v;
            }
            5 => {
                header.as_object_mut().unwrap().remove(&name);
            }
            6 => header["__metadata__"] = json!({"format": weird_json(rng).to_string()}),
            _ => {
                // Swap the dtype for one of the same size, reinterpreting the bytes.
                entry["dtype"] = json!(["I32", "U32"].choose(rng).unwrap());
            }
        }
        if header.get(&name).is_none() {
            break;
        }
    }
    join_safetensors(&header, &data)
}

/// Mutates the scalars (metadata) and tensor entries of a state file.
fn mutate_state(bytes: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let (mut header, data) = split_safetensors(bytes);
    let meta = header["__metadata__"].as_object_mut().unwrap();
    let keys: Vec<String> = meta.keys().cloned().collect();
    for _ in 0..rng.random_range(1..3) {
        let key = keys.choose(rng).unwrap().clone();
        match rng.random_range(0..10) {
            0..=5 => {
                meta.insert(key, json!(weird_number(rng)));
            }
            6 => {
                meta.remove(&key);
            }
            7 => {
                let v = meta.remove(&key).unwrap_or(json!("1"));
                meta.insert(format!("{key}{}", ["x", ".0", "s"].choose(rng).unwrap()), v);
            }
            8 => {
                meta.insert(
                    ["optimizer", "format"].choose(rng).unwrap().to_string(),
                    json!(["SGD", "Adam", "taper-optim-state/2", ""]
                        .choose(rng)
                        .unwrap()),
                );
            }
            _ => {
                meta.insert(format!("{}.extra", keys[0]), json!(weird_number(rng)));
            }
        }
    }
    // Sometimes a tensor entry too.
    if rng.random_bool(0.2) {
        let names = tensor_names(&header);
        if let Some(n) = names.choose(rng) {
            header[n]["dtype"] = json!(["I64", "U8", "F64", "F16"].choose(rng).unwrap());
        }
    }
    join_safetensors(&header, &data)
}

/// Mutates fields of trainer.json (or its text, for duplicates).
fn mutate_trainer(bytes: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(bytes).unwrap();
    let paths: [&[&str]; 12] = [
        &["epoch"],
        &["step"],
        &["batch_in_epoch"],
        &["data_seed"],
        &["batches_per_epoch"],
        &["rng", "seed"],
        &["rng", "key"],
        &["rng", "stream"],
        &["rng", "word_pos"],
        &["format"],
        &["metadata"],
        &["rng"],
    ];
    for _ in 0..rng.random_range(1..3) {
        let path = paths.choose(rng).unwrap();
        let (last, parents) = path.split_last().unwrap();
        let mut at = Some(&mut v);
        for p in parents {
            at = at.and_then(|a| a.get_mut(*p));
        }
        let Some(obj) = at.and_then(Value::as_object_mut) else {
            continue; // an earlier mutation replaced the parent
        };
        if rng.random_bool(0.15) {
            obj.remove(*last);
        } else {
            obj.insert(last.to_string(), weird_json(rng));
        }
    }
    let mut text = serde_json::to_string_pretty(&v).unwrap();
    if rng.random_bool(0.1) {
        let k = ["\"step\":", "\"epoch\":", "\"key\":"].choose(rng).unwrap();
        text = text.replacen(k, &format!("{k} 1, {k}"), 1);
    }
    text.into_bytes()
}

fn fuzz(root: &Path, cases: usize) {
    let good = root.join("good");
    good_checkpoint(&good);
    let originals: Vec<Vec<u8>> = FILES
        .iter()
        .map(|f| std::fs::read(good.join(f)).unwrap())
        .collect();
    let case = root.join("case");
    std::fs::create_dir_all(&case).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(20261125);
    for (which, file) in FILES.iter().enumerate() {
        let (mut errors, mut clean, mut unsigned) = (0usize, 0usize, 0usize);
        for i in 0..cases {
            for (k, f) in FILES.iter().enumerate() {
                std::fs::write(case.join(f), &originals[k]).unwrap();
            }
            let mutated = match which {
                0 => mutate_model(&originals[0], &mut rng),
                1 | 2 => mutate_state(&originals[which], &mut rng),
                _ => mutate_trainer(&originals[3], &mut rng),
            };
            std::fs::write(case.join(file), &mutated).unwrap();
            if rng.random_bool(0.9) {
                resign(&case);
            } else {
                unsigned += 1;
            }
            let mut p = pieces(1000 + i as u64);
            one_step(&mut p).unwrap();
            let before = snapshot(&p);
            let outcome = Checkpoint::load(&case).and_then(|c| {
                c.restore(
                    &p.store,
                    &mut p.opt,
                    &mut [("sched", &mut p.sched), ("early", &mut p.early)],
                )
            });
            match outcome {
                Ok(()) => {
                    clean += 1;
                    // Training goes on from whatever was accepted.
                    one_step(&mut p).unwrap_or_else(|e| {
                        panic!("{file} case {i}: accepted, then the next step failed: {e}")
                    });
                }
                Err(_) => {
                    errors += 1;
                    assert_eq!(
                        snapshot(&p),
                        before,
                        "{file} case {i}: a failed restore changed something"
                    );
                }
            }
        }
        println!(
            "{file}: {cases} structured mutations ({unsigned} left unsigned): \
             {errors} errors, {clean} clean restores, 0 panics"
        );
        assert!(
            errors > cases / 4,
            "{file}: too few mutations were caught: {errors}"
        );
    }
}

#[test]
fn structured_mutations_of_every_checkpoint_file_never_panic_or_half_restore() {
    if let Ok(root) = std::env::var(CHILD) {
        let cases = std::env::var("TAPER_FUZZ_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5000);
        // A panic anywhere is a failure, caught here to name the case in the output.
        fuzz(Path::new(&root), cases);
        println!("FUZZ-OK");
        return;
    }
    let root = TmpDir::fresh("fuzz", "structured");
    std::fs::create_dir_all(&*root).unwrap();
    run_capped_fuzz_child(
        "structured_mutations_of_every_checkpoint_file_never_panic_or_half_restore",
        CHILD,
        root.as_os_str(),
    );
}
