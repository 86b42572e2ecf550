//! Vocabularies: text to token ids and back, saved as a JSON file beside the model.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{invalid, Error};
use crate::Result;

/// The format tag of a vocabulary file.
const FORMAT: &str = "taper-vocab/1";
/// The most tokens a character vocabulary file may list (Unicode has fewer scalar values).
const MAX_CHARS: usize = 0x11_0000;

/// A vocabulary: how text becomes token ids (`encode`) and ids become text (`decode`).
///
/// - [`Vocab::chars_of`]: one id per distinct character of a text, in code-point order (the
///   character-level models of Karpathy's char-rnn and nanoGPT);
/// - [`Vocab::bytes`]: the 256 byte values, for any text (decoding replaces invalid UTF-8
///   with U+FFFD, as `String::from_utf8_lossy`);
/// - `Vocab::bpe` (feature `bpe`): a trained `tokenizers` BPE (or any) tokenizer.
///
/// [`Vocab::save`] writes it beside the model (atomically, as every Taper file) and
/// [`Vocab::load`] reads it back, validated, so the ids a model was trained on are the ids
/// it samples in.
///
/// ```
/// use taper_data::text::Vocab;
/// let v = Vocab::chars_of("hello world");
/// assert_eq!(v.len(), 8); // ' ', d, e, h, l, o, r, w
/// let ids = v.encode("hold")?;
/// assert_eq!(v.decode(&ids)?, "hold");
/// assert!(v.encode("hello!").is_err()); // '!' is not in the vocabulary
/// let dir = std::env::temp_dir().join(format!("taper-vocab-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// v.save(dir.join("vocab.json"))?;
/// assert_eq!(Vocab::load(dir.join("vocab.json"))?, v);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Vocab {
    /// One id per character, in the order of `chars`.
    Chars {
        /// The characters; a character's id is its index.
        chars: Vec<char>,
        /// Each character's id.
        index: HashMap<char, u32>,
    },
    /// The 256 byte values; a byte's id is its value.
    Bytes,
    /// A `tokenizers` tokenizer (feature `bpe`).
    #[cfg(feature = "bpe")]
    Bpe(Box<tokenizers::Tokenizer>),
}

impl PartialEq for Vocab {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Vocab::Chars { chars: a, .. }, Vocab::Chars { chars: b, .. }) => a == b,
            (Vocab::Bytes, Vocab::Bytes) => true,
            #[cfg(feature = "bpe")]
            (Vocab::Bpe(a), Vocab::Bpe(b)) => a.to_string(false).ok() == b.to_string(false).ok(),
            _ => false,
        }
    }
}

impl Vocab {
    /// The distinct characters of `text`, in code-point order.
    pub fn chars_of(text: &str) -> Self {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        Self::from_chars(chars)
    }

    /// The byte-level vocabulary: 256 ids.
    pub fn bytes() -> Self {
        Vocab::Bytes
    }

    /// A tokenizer from the `tokenizers` crate (for example one trained with its BPE
    /// trainer, or read with `Tokenizer::from_file("tokenizer.json")`).
    #[cfg(feature = "bpe")]
    pub fn bpe(tokenizer: tokenizers::Tokenizer) -> Self {
        Vocab::Bpe(Box::new(tokenizer))
    }

    fn from_chars(chars: Vec<char>) -> Self {
        let index = chars
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, i as u32))
            .collect();
        Vocab::Chars { chars, index }
    }

    /// Number of ids: an `Embedding`'s `num_embeddings` and the output layer's width.
    pub fn len(&self) -> usize {
        match self {
            Vocab::Chars { chars, .. } => chars.len(),
            Vocab::Bytes => 256,
            #[cfg(feature = "bpe")]
            Vocab::Bpe(t) => t.get_vocab_size(true),
        }
    }

    /// True for a character vocabulary of an empty text.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids of `text`. A character outside a character vocabulary is an error naming it
    /// and its byte offset.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Vocab::Chars { index, .. } => text
                .char_indices()
                .map(|(at, c)| {
                    index.get(&c).copied().ok_or_else(|| {
                        invalid(
                            "text",
                            format!("character {c:?} at byte {at}"),
                            "characters of the vocabulary",
                        )
                    })
                })
                .collect(),
            Vocab::Bytes => Ok(text.bytes().map(u32::from).collect()),
            #[cfg(feature = "bpe")]
            Vocab::Bpe(t) => Ok(t
                .encode(text, false)
                .map_err(|e| invalid("text", e, "text the tokenizer can encode"))?
                .get_ids()
                .to_vec()),
        }
    }

    /// The text of `ids`. An id at or past [`len`](Self::len) is an error naming it.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let n = self.len();
        if let Some((at, id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= n) {
            return Err(invalid(
                "ids",
                format!("id {id} at position {at}"),
                "ids below the vocabulary size",
            ));
        }
        match self {
            Vocab::Chars { chars, .. } => Ok(ids.iter().map(|&i| chars[i as usize]).collect()),
            Vocab::Bytes => {
                let bytes: Vec<u8> = ids.iter().map(|&i| i as u8).collect();
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
            #[cfg(feature = "bpe")]
            Vocab::Bpe(t) => t
                .decode(ids, false)
                .map_err(|e| invalid("ids", e, "ids the tokenizer can decode")),
        }
    }

    /// The vocabulary as JSON: `{"format": "taper-vocab/1", "kind": "chars", "tokens":
    /// […]}` (or `"bytes"`, or `"bpe"` with the tokenizer's own JSON under `"tokenizer"`).
    pub fn to_json(&self) -> Result<String> {
        let value = match self {
            Vocab::Chars { chars, .. } => serde_json::json!({
                "format": FORMAT,
                "kind": "chars",
                "tokens": chars.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            }),
            Vocab::Bytes => serde_json::json!({"format": FORMAT, "kind": "bytes"}),
            #[cfg(feature = "bpe")]
            Vocab::Bpe(t) => {
                let json = t
                    .to_string(false)
                    .map_err(|e| invalid("tokenizer", e, "a tokenizer that serializes"))?;
                let tokenizer: serde_json::Value = serde_json::from_str(&json)
                    .map_err(|e| invalid("tokenizer", e, "a tokenizer that serializes"))?;
                serde_json::json!({"format": FORMAT, "kind": "bpe", "tokenizer": tokenizer})
            }
        };
        serde_json::to_string_pretty(&value).map_err(|e| invalid("vocabulary", e, "JSON"))
    }

    /// Writes [`to_json`](Self::to_json) to `path`, atomically (a kill leaves the old file or
    /// the new one).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        taper_tensor::write_atomic(path.as_ref(), self.to_json()?.as_bytes())?;
        Ok(())
    }

    /// Reads a file written by [`save`](Self::save). Everything is checked before use: the
    /// format tag, the kind, and for characters that each token is one character and none
    /// repeats; an error names the file and what is wrong.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text).map_err(|reason| Error::Malformed {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parses [`to_json`](Self::to_json)'s output; the error says what is wrong.
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        if v.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(format!("`format` is not \"{FORMAT}\""));
        }
        match v.get("kind").and_then(|k| k.as_str()) {
            Some("chars") => chars_from_json(&v),
            Some("bytes") => Ok(Vocab::Bytes),
            #[cfg(feature = "bpe")]
            Some("bpe") => {
                let t = v.get("tokenizer").ok_or("`tokenizer` is missing")?;
                let t: tokenizers::Tokenizer = t
                    .to_string()
                    .parse()
                    .map_err(|e| format!("`tokenizer`: {e}"))?;
                Ok(Vocab::bpe(t))
            }
            #[cfg(not(feature = "bpe"))]
            Some("bpe") => Err("a BPE vocabulary needs taper-data's `bpe` feature".into()),
            other => Err(format!(
                "`kind` is {other:?}; expected \"chars\", \"bytes\" or \"bpe\""
            )),
        }
    }
}

/// The `tokens` list of a character vocabulary: one character each, none repeated.
fn chars_from_json(v: &serde_json::Value) -> std::result::Result<Vocab, String> {
    let tokens = v
        .get("tokens")
        .and_then(|t| t.as_array())
        .ok_or("`tokens` is missing or not a list")?;
    if tokens.len() > MAX_CHARS {
        return Err(format!(
            "`tokens` lists {} entries; at most {MAX_CHARS}",
            tokens.len()
        ));
    }
    let mut chars = Vec::with_capacity(tokens.len());
    let mut seen = std::collections::HashSet::new();
    for (i, t) in tokens.iter().enumerate() {
        let s = t.as_str().ok_or(format!("`tokens[{i}]` is not a string"))?;
        let mut it = s.chars();
        let c = match (it.next(), it.next()) {
            (Some(c), None) => c,
            _ => return Err(format!("`tokens[{i}]` is {s:?}; expected one character")),
        };
        if !seen.insert(c) {
            return Err(format!("`tokens[{i}]` ({c:?}) repeats an earlier token"));
        }
        chars.push(c);
    }
    Ok(Vocab::from_chars(chars))
}
