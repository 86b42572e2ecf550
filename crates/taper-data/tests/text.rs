//! Text data: vocabularies encode and decode exactly, save and load (hostile files are
//! errors, never panics), token windows pair each input with its next-token target, and the
//! built-in corpus's split is fixed.

use taper_data::text::{shakespeare, TokenWindows, Vocab};
use taper_data::{Batching, DataLoader, Dataset};

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("taper-text-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn character_and_byte_vocabularies_round_trip_text_and_files() {
    let corpus = shakespeare();
    let v = Vocab::chars_of(corpus.train);
    assert_eq!(v.len(), 65, "the corpus's 65 characters");
    let ids = v.encode(corpus.valid).unwrap();
    assert_eq!(ids.len(), corpus.valid.chars().count());
    assert_eq!(v.decode(&ids).unwrap(), corpus.valid);
    // Code-point order: '\n' first, then ' ', …
    assert_eq!(v.decode(&[0, 1]).unwrap(), "\n ");
    let e = v.encode("Ωmega").unwrap_err().to_string();
    assert!(e.contains("'Ω'") && e.contains("byte 0"), "{e}");
    let e = v.decode(&[3, 65]).unwrap_err().to_string();
    assert!(e.contains("id 65 at position 1"), "{e}");

    let b = Vocab::bytes();
    assert_eq!(b.len(), 256);
    let ids = b.encode("Größe").unwrap();
    assert_eq!(ids.len(), 7);
    assert_eq!(b.decode(&ids).unwrap(), "Größe");
    assert_eq!(b.decode(&ids[..3]).unwrap(), "Gr\u{fffd}"); // a cut character is replaced

    let d = tmp("files");
    for vocab in [v, b, Vocab::chars_of("")] {
        let path = d.join("vocab.json");
        vocab.save(&path).unwrap();
        assert_eq!(Vocab::load(&path).unwrap(), vocab);
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn hostile_vocabulary_files_are_errors_naming_the_problem() {
    let good = Vocab::chars_of("abc").to_json().unwrap();
    for (text, says) in [
        ("", "not JSON"),
        (&good[..good.len() / 2], "not JSON"),
        (r#"{"format": "taper-vocab/2", "kind": "chars"}"#, "format"),
        (r#"{"format": "taper-vocab/1", "kind": "words"}"#, "kind"),
        (r#"{"format": "taper-vocab/1", "kind": "chars"}"#, "tokens"),
        (
            r#"{"format": "taper-vocab/1", "kind": "chars", "tokens": ["a", "bc"]}"#,
            "tokens[1]",
        ),
        (
            r#"{"format": "taper-vocab/1", "kind": "chars", "tokens": ["a", ""]}"#,
            "tokens[1]",
        ),
        (
            r#"{"format": "taper-vocab/1", "kind": "chars", "tokens": ["a", "a"]}"#,
            "repeats",
        ),
        (
            r#"{"format": "taper-vocab/1", "kind": "chars", "tokens": ["a", 7]}"#,
            "not a string",
        ),
    ] {
        let e = Vocab::from_json(text).unwrap_err();
        assert!(e.contains(says), "{text:?}: {e}");
    }
    let d = tmp("hostile");
    let path = d.join("vocab.json");
    std::fs::write(&path, "[1, 2]").unwrap();
    let e = Vocab::load(&path).unwrap_err().to_string();
    assert!(e.contains("vocab.json"), "{e}");
    assert!(Vocab::load(d.join("missing.json")).is_err());
    let _ = std::fs::remove_dir_all(&d);
}

/// Structure-aware fuzzing of the vocabulary reader: byte flips, truncations and splices of
/// a valid file, each an error or a valid vocabulary, never a panic.
#[test]
fn mutated_vocabulary_files_never_panic() {
    let good = Vocab::chars_of("hello, world!\nΩ")
        .to_json()
        .unwrap()
        .into_bytes();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..3000 {
        let mut bytes = good.clone();
        match next() % 3 {
            0 => {
                for _ in 0..1 + next() % 4 {
                    let i = (next() as usize) % bytes.len();
                    bytes[i] = b"\"[]{},:0a\\ x"[(next() % 12) as usize];
                }
            }
            1 => bytes.truncate((next() as usize) % bytes.len()),
            _ => {
                let (i, j) = (
                    (next() as usize) % bytes.len(),
                    (next() as usize) % bytes.len(),
                );
                let (a, b) = (i.min(j), i.max(j));
                let chunk = bytes[a..b].to_vec();
                bytes.splice(a..a, chunk);
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        match std::panic::catch_unwind(|| Vocab::from_json(&text)) {
            Ok(Ok(v)) => {
                ok += 1;
                // What loads works: every id decodes.
                let ids: Vec<u32> = (0..v.len() as u32).collect();
                assert_eq!(v.decode(&ids).unwrap().chars().count(), v.len());
            }
            Ok(Err(_)) => refused += 1,
            Err(_) => panic!("the reader panicked on {text:?}"),
        }
    }
    assert!(refused > 1000, "{ok} loaded, {refused} refused");
}

#[test]
fn token_windows_pair_each_input_with_its_next_token_target() {
    let ids: Vec<u32> = (0..100).collect();
    let ds = TokenWindows::new(&ids, 8).unwrap();
    assert_eq!(ds.len(), 92);
    let (x, y) = ds.get(91).unwrap();
    assert_eq!(x.to_vec1::<u32>().unwrap(), (91..99).collect::<Vec<_>>());
    assert_eq!(y.to_vec1::<u32>().unwrap(), (92..100).collect::<Vec<_>>());
    assert!(ds.get(92).is_err());
    let strided = TokenWindows::new(&ids, 8).unwrap().stride(8).unwrap();
    assert_eq!(strided.len(), 12); // windows at 0, 8, …, 88 (the last target is id 96)
    let (x, y) = strided.get_batch(&[0, 11]).unwrap();
    assert_eq!(x.dims(), &[2, 8]);
    assert_eq!(x.to_vec2::<u32>().unwrap()[1][0], 88);
    assert_eq!(y.to_vec2::<u32>().unwrap()[1][7], 96);
    // Batched through a loader, every window once per epoch.
    let loader = DataLoader::new(ds, Batching::MiniBatch(10))
        .unwrap()
        .shuffle(true)
        .seed(4);
    let mut firsts = Vec::new();
    for b in loader.epoch(0) {
        let b = b.unwrap();
        let (x, y) = (
            b.inputs.to_vec2::<u32>().unwrap(),
            b.targets.to_vec2::<u32>().unwrap(),
        );
        for (xr, yr) in x.iter().zip(&y) {
            assert_eq!(&xr[1..], &yr[..7]);
            firsts.push(xr[0]);
        }
    }
    firsts.sort_unstable();
    assert_eq!(firsts, (0..92).collect::<Vec<_>>());
    // Bad arguments name themselves.
    for (e, field) in [
        (TokenWindows::new(&ids, 0).unwrap_err(), "block_size"),
        (TokenWindows::new(&ids[..8], 8).unwrap_err(), "ids"),
        (
            TokenWindows::new(&ids, 8).unwrap().stride(0).unwrap_err(),
            "stride",
        ),
    ] {
        assert!(e.to_string().contains(field), "{e}");
    }
}

#[test]
fn the_corpus_split_is_fixed() {
    let c = shakespeare();
    assert_eq!(c.train.len() + c.valid.len(), 1_032_831);
    assert_eq!(c.train.len(), 929_584);
    assert!(c.train.ends_with('\n'));
    assert!(c.valid.len() > 100_000);
}

/// A `tokenizers` BPE tokenizer as a vocabulary (feature `bpe`): it encodes with its merges,
/// and its file round-trips.
#[cfg(feature = "bpe")]
#[test]
fn a_bpe_tokenizer_is_a_vocabulary_that_saves_and_loads() {
    let json = r#"{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": null, "post_processor": null, "decoder": null,
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
            "byte_fallback": false, "ignore_merges": false,
            "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4},
            "merges": ["a b", "ab c"]}}"#;
    let v = Vocab::bpe(json.parse().unwrap());
    assert_eq!(v.len(), 5);
    assert_eq!(v.encode("abcab").unwrap(), [4, 3]);
    assert_eq!(v.encode("cba").unwrap(), [2, 1, 0]);
    assert!(v.decode(&[4, 5]).is_err());
    let d = tmp("bpe");
    v.save(d.join("vocab.json")).unwrap();
    let back = Vocab::load(d.join("vocab.json")).unwrap();
    assert_eq!(back, v);
    assert_eq!(back.encode("abcab").unwrap(), [4, 3]);
    let _ = std::fs::remove_dir_all(&d);
}
