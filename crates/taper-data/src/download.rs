//! Opt-in downloads (feature `download`) of MNIST and Fashion-MNIST from their public
//! mirrors, verified against the published SHA-256 of each file.
//!
//! Each file streams into `<name>.part` while it is hashed; it is renamed into place only
//! when the checksum matches, and a partial or mismatching file is removed. Files already
//! present with the right checksum are not fetched again.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::mnist::MnistKind;
use crate::{Error, Result};

/// The published SHA-256 of the four files, in [`crate::mnist::FILES`] order.
pub fn checksums(kind: MnistKind) -> [(&'static str, &'static str); 4] {
    match kind {
        MnistKind::Mnist => [
            (
                "train-images-idx3-ubyte.gz",
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            ),
            (
                "train-labels-idx1-ubyte.gz",
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            ),
            (
                "t10k-images-idx3-ubyte.gz",
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            ),
            (
                "t10k-labels-idx1-ubyte.gz",
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            ),
        ],
        MnistKind::Fashion => [
            (
                "train-images-idx3-ubyte.gz",
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            ),
            (
                "train-labels-idx1-ubyte.gz",
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            ),
            (
                "t10k-images-idx3-ubyte.gz",
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            ),
            (
                "t10k-labels-idx1-ubyte.gz",
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            ),
        ],
    }
}

/// The public mirrors, tried in order.
pub fn mirrors(kind: MnistKind) -> &'static [&'static str] {
    match kind {
        MnistKind::Mnist => &[
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ],
        MnistKind::Fashion => &[
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        ],
    }
}

/// Downloads `kind` into `dir` (created if needed) from the public mirrors; returns `dir`.
pub fn download(kind: MnistKind, dir: &Path) -> Result<PathBuf> {
    let mut last = None;
    for base in mirrors(kind) {
        match download_from(base, &checksums(kind), dir) {
            Ok(()) => return Ok(dir.to_path_buf()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::Download {
        url: String::new(),
        reason: "no mirror".into(),
    }))
}

fn sha256_file(path: &Path) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            return Some(hex(&h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Downloads each (file, sha256) from `base_url` into `dir`.
pub fn download_from(base_url: &str, files: &[(&str, &str)], dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for (name, sha) in files {
        let dest = dir.join(name);
        if sha256_file(&dest).as_deref() == Some(*sha) {
            continue;
        }
        let url = format!("{}/{name}", base_url.trim_end_matches('/'));
        let part = dir.join(format!("{name}.part"));
        let result = fetch(&url, &part, sha);
        match result {
            Ok(()) => std::fs::rename(&part, &dest).map_err(|source| Error::Io {
                path: dest.clone(),
                source,
            })?,
            Err(e) => {
                let _ = std::fs::remove_file(&part);
                return Err(e);
            }
        }
    }
    Ok(())
}

fn fetch(url: &str, part: &Path, sha: &str) -> Result<()> {
    let err = |reason: String| Error::Download {
        url: url.to_string(),
        reason,
    };
    let mut resp = ureq::get(url).call().map_err(|e| err(e.to_string()))?;
    let mut reader = resp.body_mut().with_config().limit(200 << 20).reader();
    let mut file = std::fs::File::create(part).map_err(|source| Error::Io {
        path: part.to_path_buf(),
        source,
    })?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| err(format!("connection broke off: {e}")))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(|source| Error::Io {
            path: part.to_path_buf(),
            source,
        })?;
    }
    file.sync_all().map_err(|source| Error::Io {
        path: part.to_path_buf(),
        source,
    })?;
    let got = hex(&h.finalize());
    if got != sha {
        return Err(err(format!(
            "SHA-256 mismatch: expected {sha}, got {got}; the partial file was removed"
        )));
    }
    Ok(())
}
