//! The IDX format of MNIST, Fashion-MNIST, KMNIST and EMNIST: read (raw or gzip) and write.
//!
//! Layout: two zero bytes, a type code (0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32,
//! 0x0E f64), the number of dimensions, each dimension as a big-endian u32, then the data,
//! big-endian. Reading validates all of it and never allocates by what a header claims:
//! the payload is read first (gzip output is capped at the size the header declares, plus
//! one byte to detect excess), then compared with the declared size.

use std::io::Read;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// The most a deflate stream can expand: 258 bytes from about 2 bits.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// The element type of an IDX file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdxType {
    /// 0x08, unsigned byte.
    U8,
    /// 0x09, signed byte.
    I8,
    /// 0x0B, 16-bit integer.
    I16,
    /// 0x0C, 32-bit integer.
    I32,
    /// 0x0D, 32-bit float.
    F32,
    /// 0x0E, 64-bit float.
    F64,
}

impl IdxType {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0x08 => IdxType::U8,
            0x09 => IdxType::I8,
            0x0B => IdxType::I16,
            0x0C => IdxType::I32,
            0x0D => IdxType::F32,
            0x0E => IdxType::F64,
            _ => return None,
        })
    }

    fn code(self) -> u8 {
        match self {
            IdxType::U8 => 0x08,
            IdxType::I8 => 0x09,
            IdxType::I16 => 0x0B,
            IdxType::I32 => 0x0C,
            IdxType::F32 => 0x0D,
            IdxType::F64 => 0x0E,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            IdxType::U8 | IdxType::I8 => 1,
            IdxType::I16 => 2,
            IdxType::I32 | IdxType::F32 => 4,
            IdxType::F64 => 8,
        }
    }
}

/// A decoded IDX file.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    /// The element type.
    pub dtype: IdxType,
    /// The dimensions.
    pub dims: Vec<usize>,
    /// The payload, big-endian as in the file.
    pub data: Vec<u8>,
}

impl IdxArray {
    /// The array as a tensor on `device`: u8 stays u8, other types become f32 (i32 as
    /// i64), f64 stays f64.
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        let dims = self.dims.clone();
        let t = match self.dtype {
            IdxType::U8 => Tensor::from_vec(self.data.clone(), dims, device)?,
            IdxType::I8 => floats(
                self.data.iter().map(|&b| b as i8 as f32).collect(),
                dims,
                device,
            )?,
            IdxType::I16 => floats(
                self.data
                    .chunks_exact(2)
                    .map(|c| i16::from_be_bytes([c[0], c[1]]) as f32)
                    .collect(),
                dims,
                device,
            )?,
            IdxType::I32 => {
                let v: Vec<i64> = self
                    .data
                    .chunks_exact(4)
                    .map(|c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]) as i64)
                    .collect();
                Tensor::from_vec(v, dims, device)?
            }
            IdxType::F32 => floats(
                self.data
                    .chunks_exact(4)
                    .map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                dims,
                device,
            )?,
            IdxType::F64 => {
                let v: Vec<f64> = self
                    .data
                    .chunks_exact(8)
                    .map(|c| f64::from_be_bytes(c.try_into().expect("8 bytes")))
                    .collect();
                Tensor::from_vec(v, dims, device)?
            }
        };
        Ok(t)
    }
}

fn floats(v: Vec<f32>, dims: Vec<usize>, device: &Device) -> candle_core::Result<Tensor> {
    Tensor::from_vec(v, dims, device)
}

fn malformed(path: &Path, reason: impl Into<String>) -> Error {
    Error::Malformed {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads an IDX file, gzip-compressed or not (detected from its first bytes).
pub fn read_idx(path: impl AsRef<Path>) -> Result<IdxArray> {
    let path = path.as_ref();
    let raw = std::fs::read(path).map_err(io(path))?;
    parse_idx(&raw, path)
}

/// Decodes IDX bytes (gzip or raw); `path` names the source in errors.
///
/// Loading data is often a script's first large allocation, so this first keeps freed
/// memory in the process ([`taper_tensor::retain_freed_memory`]), which works fully only
/// when it comes before such allocations.
pub fn parse_idx(raw: &[u8], path: &Path) -> Result<IdxArray> {
    taper_tensor::retain_freed_memory();
    if raw.starts_with(&[0x1f, 0x8b]) {
        // Every gzip member is read (a valid multi-member file is one stream), and anything
        // after the last member that is not another member is an error, as it is for a raw
        // file. The header is decoded first; the payload is capped at its declared size + 1
        // byte, and a declared size that the compressed bytes cannot possibly hold (deflate
        // expands at most 1032:1) is rejected before anything is decompressed.
        let corrupt =
            |e: std::io::Error| malformed(path, format!("corrupt or truncated gzip stream: {e}"));
        let mut dec = flate2::read::MultiGzDecoder::new(raw);
        let mut head = [0u8; 4];
        dec.read_exact(&mut head).map_err(corrupt)?;
        let ndims = head[3] as usize;
        let mut dims_raw = vec![0u8; 4 * ndims];
        dec.read_exact(&mut dims_raw).map_err(corrupt)?;
        let mut header = head.to_vec();
        header.extend_from_slice(&dims_raw);
        let (dtype, dims, payload_len) = parse_header(path, &header)?;
        let max_expansion = (raw.len() as u64).saturating_mul(MAX_DEFLATE_RATIO);
        if payload_len as u64 > max_expansion {
            return Err(malformed(
                path,
                format!(
                    "header declares {payload_len} bytes of data, more than {} compressed bytes \
                     can hold: the file is truncated or the header is wrong",
                    raw.len()
                ),
            ));
        }
        let mut payload = Vec::new();
        (&mut dec)
            .take(payload_len as u64 + 1)
            .read_to_end(&mut payload)
            .map_err(corrupt)?;
        check_payload(path, payload.len(), payload_len)?;
        // The stream must end here: no further data, no trailing bytes that are not gzip.
        let mut one = [0u8; 1];
        match dec.read(&mut one) {
            Ok(0) => {}
            Ok(_) => {
                return Err(malformed(
                    path,
                    format!("payload longer than the {payload_len} bytes the header declares"),
                ))
            }
            Err(e) => return Err(corrupt(e)),
        }
        Ok(IdxArray {
            dtype,
            dims,
            data: payload,
        })
    } else {
        let (dtype, dims, payload_len) = parse_header(path, raw)?;
        let start = 4 + 4 * dims.len();
        check_payload(path, raw.len() - start, payload_len)?;
        Ok(IdxArray {
            dtype,
            dims,
            data: raw[start..].to_vec(),
        })
    }
}

fn parse_header(path: &Path, bytes: &[u8]) -> Result<(IdxType, Vec<usize>, usize)> {
    if bytes.len() < 4 {
        return Err(malformed(
            path,
            format!(
                "file of {} bytes is too short for an IDX header",
                bytes.len()
            ),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(malformed(
            path,
            format!(
                "bad magic number {:02x}{:02x}{:02x}{:02x}: IDX files start with two zero bytes",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
        ));
    }
    let dtype = IdxType::from_code(bytes[2]).ok_or_else(|| {
        malformed(
            path,
            format!(
                "unknown IDX type code 0x{:02x} (expected 08, 09, 0B, 0C, 0D or 0E)",
                bytes[2]
            ),
        )
    })?;
    let ndims = bytes[3] as usize;
    if ndims == 0 {
        return Err(malformed(path, "IDX header declares 0 dimensions"));
    }
    if bytes.len() < 4 + 4 * ndims {
        return Err(malformed(
            path,
            format!("truncated header: {ndims} dimensions declared, file ends first"),
        ));
    }
    let dims: Vec<usize> = bytes[4..4 + 4 * ndims]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let count = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let payload = count
        .and_then(|c| c.checked_mul(dtype.size()))
        .ok_or_else(|| malformed(path, format!("dimensions {dims:?} overflow")))?;
    Ok((dtype, dims, payload))
}

fn check_payload(path: &Path, actual: usize, declared: usize) -> Result<()> {
    if actual < declared {
        Err(malformed(
            path,
            format!("truncated payload: header declares {declared} bytes, file has {actual}"),
        ))
    } else if actual > declared {
        Err(malformed(
            path,
            format!("payload longer than the {declared} bytes the header declares"),
        ))
    } else {
        Ok(())
    }
}

/// Writes an IDX file of u8 data (gzip-compressed when the name ends in `.gz`), atomically.
pub fn write_idx_u8(path: impl AsRef<Path>, dims: &[usize], data: &[u8]) -> Result<()> {
    let path = path.as_ref();
    if dims.is_empty() || dims.len() > 255 || dims.iter().any(|&d| d > u32::MAX as usize) {
        return Err(crate::error::invalid(
            "dims",
            format!("{dims:?}"),
            "1 to 255 dimensions, each below 2^32",
        ));
    }
    if dims.iter().product::<usize>() != data.len() {
        return Err(crate::error::invalid(
            "data",
            format!("{} bytes for dims {dims:?}", data.len()),
            "as many bytes as the dimensions hold",
        ));
    }
    let mut bytes = vec![0, 0, IdxType::U8.code(), dims.len() as u8];
    for &d in dims {
        bytes.extend_from_slice(&(d as u32).to_be_bytes());
    }
    bytes.extend_from_slice(data);
    if path.extension().is_some_and(|e| e == "gz") {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&bytes).map_err(io(path))?;
        bytes = enc.finish().map_err(io(path))?;
    }
    // A hidden sibling, synced and renamed; removed if writing fails (a full disk).
    taper_tensor::write_atomic(path, &bytes)?;
    Ok(())
}

/// The dtype Taper gives an IDX type's tensor.
pub fn tensor_dtype(t: IdxType) -> DType {
    match t {
        IdxType::U8 => DType::U8,
        IdxType::I32 => DType::I64,
        IdxType::F64 => DType::F64,
        _ => DType::F32,
    }
}
