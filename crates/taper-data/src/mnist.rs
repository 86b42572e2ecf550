//! MNIST-format datasets (MNIST, Fashion-MNIST, and any directory of the four IDX files).
//!
//! [`load`] looks, in order, in:
//! 1. an explicit directory;
//! 2. the directory named by the `TAPER_DATA` environment variable (or its `mnist` /
//!    `fashion-mnist` subdirectory);
//! 3. well-known locations: `/usr/share/datasets/fashion-mnist` (Debian's
//!    `dataset-fashion-mnist`), `/usr/share/datasets/mnist`, `~/.cache/taper/<name>`;
//! 4. for MNIST only, the built-in subset compiled into this crate: 8,000 train and 2,000
//!    test real digits (`data/mnist-10k`, see its README for provenance and checksums).
//!
//! A directory named explicitly or by `TAPER_DATA` must hold the files: it is an error, not
//! a silent fallback. Images become f32 (N, 1, H, W) in [0, 1]; labels u32 (N).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::dataset::TensorDataset;
use crate::idx::{parse_idx, read_idx, IdxArray, IdxType};
use crate::{Error, Result};

/// Which dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MnistKind {
    /// Handwritten digits (LeCun, Cortes & Burges).
    Mnist,
    /// Zalando's clothing images (Xiao, Rasul & Vollgraf 2017).
    Fashion,
}

impl MnistKind {
    /// The conventional directory name.
    pub fn dir_name(self) -> &'static str {
        match self {
            MnistKind::Mnist => "mnist",
            MnistKind::Fashion => "fashion-mnist",
        }
    }
}

/// Where a loaded dataset came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// A directory on disk.
    Dir(PathBuf),
    /// The subset compiled into taper-data.
    BuiltIn,
}

impl std::fmt::Display for DataSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataSource::Dir(d) => write!(f, "{}", d.display()),
            DataSource::BuiltIn => write!(f, "built-in MNIST subset (8,000 train / 2,000 test)"),
        }
    }
}

/// A train/test pair of MNIST-format data.
#[derive(Debug, Clone)]
pub struct Mnist {
    /// Training images (N, 1, H, W) f32 and labels (N) u32.
    pub train: TensorDataset,
    /// Test images and labels.
    pub test: TensorDataset,
    /// Where the files were found.
    pub source: DataSource,
}

/// The four files, as (stem, role).
pub const FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

const BUILTIN: [&[u8]; 4] = [
    include_bytes!("../data/mnist-10k/train-images-idx3-ubyte.gz"),
    include_bytes!("../data/mnist-10k/train-labels-idx1-ubyte.gz"),
    include_bytes!("../data/mnist-10k/t10k-images-idx3-ubyte.gz"),
    include_bytes!("../data/mnist-10k/t10k-labels-idx1-ubyte.gz"),
];

/// Finds `stem` or `stem.gz` in `dir`.
fn find(dir: &Path, stem: &str) -> Option<PathBuf> {
    [dir.join(stem), dir.join(format!("{stem}.gz"))]
        .into_iter()
        .find(|p| p.is_file())
}

fn has_all(dir: &Path) -> bool {
    FILES.iter().all(|f| find(dir, f).is_some())
}

/// Loads the dataset, looking where the module docs say.
pub fn load(kind: MnistKind, dir: Option<&Path>) -> Result<Mnist> {
    if let Some(d) = dir {
        return load_dir(d);
    }
    if let Ok(env) = std::env::var("TAPER_DATA") {
        let base = PathBuf::from(&env);
        for d in [base.join(kind.dir_name()), base.clone()] {
            if has_all(&d) {
                return load_dir(&d);
            }
        }
        return Err(Error::NotFound {
            what: kind.dir_name().into(),
            tried: format!(
                "TAPER_DATA={env} has no {} files (nor its {} subdirectory)",
                FILES.join(", "),
                kind.dir_name()
            ),
        });
    }
    let mut tried = Vec::new();
    for d in well_known(kind) {
        if has_all(&d) {
            return load_dir(&d);
        }
        tried.push(d.display().to_string());
    }
    match kind {
        MnistKind::Mnist => builtin(),
        MnistKind::Fashion => Err(Error::NotFound {
            what: "Fashion-MNIST".into(),
            tried: format!(
                "looked in {}; install it with `apt-get install dataset-fashion-mnist`, set TAPER_DATA, or pass a directory",
                tried.join(", ")
            ),
        }),
    }
}

fn well_known(kind: MnistKind) -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from("/usr/share/datasets").join(kind.dir_name())];
    if let Some(home) = std::env::var_os("HOME") {
        v.push(
            PathBuf::from(home)
                .join(".cache/taper")
                .join(kind.dir_name()),
        );
    }
    v
}

/// Loads the four files from `dir` (plain or gzip).
pub fn load_dir(dir: &Path) -> Result<Mnist> {
    let mut arrays = Vec::with_capacity(4);
    for stem in FILES {
        let path = find(dir, stem).ok_or_else(|| Error::NotFound {
            what: stem.to_string(),
            tried: format!("{} (plain or .gz)", dir.join(stem).display()),
        })?;
        arrays.push((read_idx(&path)?, path));
    }
    let mut it = arrays.into_iter();
    let (ti, tl, vi, vl) = (it.next(), it.next(), it.next(), it.next());
    let (Some(ti), Some(tl), Some(vi), Some(vl)) = (ti, tl, vi, vl) else {
        unreachable!("four files were read")
    };
    Ok(Mnist {
        train: assemble(ti, tl)?,
        test: assemble(vi, vl)?,
        source: DataSource::Dir(dir.to_path_buf()),
    })
}

/// The built-in subset: 8,000 training and 2,000 test digits.
pub fn builtin() -> Result<Mnist> {
    let arr = |i: usize| -> Result<(IdxArray, PathBuf)> {
        let name = PathBuf::from(format!("<built-in>/{}.gz", FILES[i]));
        Ok((parse_idx(BUILTIN[i], &name)?, name))
    };
    Ok(Mnist {
        train: assemble(arr(0)?, arr(1)?)?,
        test: assemble(arr(2)?, arr(3)?)?,
        source: DataSource::BuiltIn,
    })
}

/// Pairs an image file (N, H, W) u8 with a label file (N) u8.
fn assemble(
    (images, ipath): (IdxArray, PathBuf),
    (labels, lpath): (IdxArray, PathBuf),
) -> Result<TensorDataset> {
    let bad = |path: &Path, reason: String| Error::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    if images.dtype != IdxType::U8 || images.dims.len() != 3 {
        return Err(bad(
            &ipath,
            format!(
                "expected u8 images of 3 dimensions (N, H, W), found {:?} {:?}",
                images.dtype, images.dims
            ),
        ));
    }
    if labels.dtype != IdxType::U8 || labels.dims.len() != 1 {
        return Err(bad(
            &lpath,
            format!(
                "expected u8 labels of 1 dimension (N), found {:?} {:?}",
                labels.dtype, labels.dims
            ),
        ));
    }
    let (n, h, w) = (images.dims[0], images.dims[1], images.dims[2]);
    if labels.dims[0] != n {
        return Err(bad(
            &lpath,
            format!(
                "{} labels for {n} images in {}",
                labels.dims[0],
                ipath.display()
            ),
        ));
    }
    let x = Tensor::from_vec(images.data, (n, 1, h, w), &Device::Cpu)?
        .to_dtype(DType::F32)?
        .affine(1.0 / 255.0, 0.0)?;
    let y = Tensor::from_vec(labels.data, n, &Device::Cpu)?.to_dtype(DType::U32)?;
    TensorDataset::new(x, y)
}
