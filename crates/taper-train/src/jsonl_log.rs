//! `JsonlLog`: one JSON object per line (JSON Lines), flushed as it is written; the
//! structured sibling of [`CsvLog`](crate::CsvLog), for logs that tools read back.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// A JSON-lines file: each [`JsonlLog::write`] appends one object and flushes.
///
/// ```
/// use serde_json::json;
/// use taper_train::JsonlLog;
/// let path = std::env::temp_dir().join(format!("taper-jsonl-doc-{}.jsonl", std::process::id()));
/// let mut log = JsonlLog::create(&path)?;
/// log.write(json!({"epoch": 1, "loss": 0.5}))?;
/// let text = std::fs::read_to_string(&path).unwrap();
/// assert_eq!(text, "{\"epoch\":1,\"loss\":0.5}\n");
/// # std::fs::remove_file(&path).unwrap();
/// # Ok::<(), taper_train::Error>(())
/// ```
#[derive(Debug)]
pub struct JsonlLog {
    file: File,
    path: String,
}

impl JsonlLog {
    /// Creates (or truncates) `path`.
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::create(path).map_err(|e| Error::Log {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            file,
            path: path.display().to_string(),
        })
    }

    /// Appends `record` as one line (an object, or any JSON value) and flushes.
    pub fn write(&mut self, record: Value) -> Result<()> {
        writeln!(self.file, "{record}")
            .and_then(|()| self.file.flush())
            .map_err(|e| Error::Log {
                path: self.path.clone(),
                reason: e.to_string(),
            })
    }

    /// Appends the numbers `values` under their keys, after `first` (the record's key
    /// fields, such as the epoch), as one object.
    pub fn write_values<'k>(
        &mut self,
        first: &[(&str, Value)],
        values: impl IntoIterator<Item = (&'k str, f64)>,
    ) -> Result<()> {
        let mut obj = Map::new();
        for (k, v) in first {
            obj.insert((*k).to_string(), v.clone());
        }
        for (k, v) in values {
            obj.insert(k.to_string(), Value::from(v));
        }
        self.write(Value::Object(obj))
    }
}
