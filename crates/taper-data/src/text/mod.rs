//! Text for language models: vocabularies that turn text into token ids and back
//! ([`Vocab`]: characters, bytes, or BPE through the `tokenizers` crate behind the `bpe`
//! feature), saved beside the model; a dataset of (input, next-token target) windows
//! ([`TokenWindows`]); and a built-in public-domain corpus with fixed splits
//! ([`shakespeare`]).
//!
//! ```
//! use taper_data::text::{shakespeare, TokenWindows, Vocab};
//! use taper_data::{Batching, DataLoader};
//! let corpus = shakespeare();
//! let vocab = Vocab::chars_of(corpus.train);
//! let ids = vocab.encode(corpus.train)?;
//! let train = TokenWindows::new(&ids, 64)?;
//! let loader = DataLoader::new(train, Batching::MiniBatch(8))?.shuffle(true).seed(1);
//! let batch = loader.epoch(0).next().unwrap()?;
//! assert_eq!(batch.inputs.dims(), &[8, 64]);
//! assert_eq!(batch.targets.dims(), &[8, 64]);
//! # Ok::<(), taper_data::Error>(())
//! ```

pub(crate) mod corpus;
pub(crate) mod token_windows;
pub(crate) mod vocab;

pub use corpus::{shakespeare, Corpus};
pub use token_windows::TokenWindows;
pub use vocab::Vocab;
