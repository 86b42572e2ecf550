//! `CsvLog`: one row of numbers per epoch (or step), flushed as it is written.

use std::fs::File;
use std::path::Path;

use crate::{Error, Result};

/// A CSV file with a fixed header.
#[derive(Debug)]
pub struct CsvLog {
    writer: csv::Writer<File>,
    columns: usize,
    path: String,
}

impl CsvLog {
    /// Creates (or truncates) `path` and writes the header.
    pub fn create(path: impl AsRef<Path>, header: &[&str]) -> Result<Self> {
        let path = path.as_ref();
        let err = |e: csv::Error| Error::InvalidValue {
            field: "path",
            value: format!("{}: {e}", path.display()),
            expected: "a writable CSV file",
        };
        let mut writer = csv::Writer::from_path(path).map_err(err)?;
        writer.write_record(header).map_err(err)?;
        writer.flush().map_err(|e| err(e.into()))?;
        Ok(Self {
            writer,
            columns: header.len(),
            path: path.display().to_string(),
        })
    }

    /// Appends a row; it must have one value per column.
    pub fn row(&mut self, values: &[f64]) -> Result<()> {
        if values.len() != self.columns {
            return Err(Error::InvalidValue {
                field: "values",
                value: format!("{} values", values.len()),
                expected: "one value per column of the header",
            });
        }
        let err = |e: String| Error::InvalidValue {
            field: "path",
            value: format!("{}: {e}", self.path),
            expected: "a writable CSV file",
        };
        self.writer
            .write_record(values.iter().map(|v| v.to_string()))
            .map_err(|e| err(e.to_string()))?;
        self.writer.flush().map_err(|e| err(e.to_string()))
    }
}
