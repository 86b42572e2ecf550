//! IDX round trips, and malformed files rejected with errors that name the file.

mod common;

use std::io::Write;
use std::path::PathBuf;

use common::TmpDir;
use taper_data::idx::{read_idx, write_idx_u8, IdxType};
use taper_data::{mnist, Error};

/// A path `name` in a fresh directory of its own, and the guard that removes that directory.
fn tmp(name: &str) -> (PathBuf, TmpDir) {
    let d = TmpDir::fresh("idx", name);
    std::fs::create_dir_all(&*d).unwrap();
    (d.join(name), d)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn header(code: u8, dims: &[u32]) -> Vec<u8> {
    let mut v = vec![0, 0, code, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v
}

#[test]
fn write_then_read_round_trips_raw_and_gzip() {
    let data: Vec<u8> = (0..2 * 3 * 4).map(|i| (i * 7 % 256) as u8).collect();
    for name in ["a-idx3-ubyte", "a-idx3-ubyte.gz"] {
        let (p, _clean) = tmp(name);
        write_idx_u8(&p, &[2, 3, 4], &data).unwrap();
        let arr = read_idx(&p).unwrap();
        assert_eq!(
            (arr.dtype, arr.dims.clone(), arr.data.clone()),
            (IdxType::U8, vec![2, 3, 4], data.clone())
        );
        let t = arr.to_tensor(&taper_tensor::Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[2, 3, 4]);
    }
    let (bad, _clean) = tmp("bad");
    assert!(write_idx_u8(bad, &[2, 2], &[1, 2, 3]).is_err());
}

fn expect_malformed(name: &str, bytes: &[u8], needle: &str) {
    let (p, _clean) = tmp(name);
    std::fs::write(&p, bytes).unwrap();
    match read_idx(&p) {
        Err(Error::Malformed { path, reason }) => {
            assert_eq!(path, p);
            assert!(
                reason.contains(needle),
                "{name}: {reason:?} should mention {needle:?}"
            );
            let msg = Error::Malformed { path, reason }.to_string();
            assert!(msg.contains(name), "the message names the file: {msg}");
        }
        other => panic!("{name}: expected a Malformed error, got {other:?}"),
    }
}

#[test]
fn malformed_files_are_rejected_without_panics_or_huge_allocations() {
    let good = [header(0x08, &[2, 2]), vec![1, 2, 3, 4]].concat();
    expect_malformed(
        "magic",
        &[vec![1, 0, 8, 2], good[4..].to_vec()].concat(),
        "bad magic number",
    );
    expect_malformed(
        "dtype",
        &[header(0x07, &[2, 2]), vec![1, 2, 3, 4]].concat(),
        "unknown IDX type code 0x07",
    );
    expect_malformed("truncated", &good[..good.len() - 1], "truncated payload");
    expect_malformed("too-long", &[good.clone(), vec![9]].concat(), "longer than");
    // A header claiming 4 × 10⁹ elements over a 4-byte payload: rejected, not allocated.
    expect_malformed(
        "lying-dims",
        &[header(0x08, &[60000, 28, 28]), vec![1, 2, 3, 4]].concat(),
        "truncated payload",
    );
    expect_malformed(
        "overflowing-dims",
        &[
            header(0x08, &[u32::MAX, u32::MAX, u32::MAX]),
            vec![1, 2, 3, 4],
        ]
        .concat(),
        "overflow",
    );
    expect_malformed(
        "lying-dims.gz",
        &gzip(&[header(0x08, &[1 << 31, 1 << 31]), vec![1, 2, 3, 4]].concat()),
        "compressed bytes",
    );
    expect_malformed("short-header", &[0, 0, 8, 3, 0, 0], "truncated header");
    expect_malformed("zero-dims", &[0, 0, 8, 0], "0 dimensions");
    expect_malformed("tiny", &[0, 0], "too short");
    let mut corrupt = gzip(&good);
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0xff;
    corrupt.truncate(corrupt.len() - 4);
    expect_malformed("corrupt.gz", &corrupt, "gzip");
    expect_malformed("truncated.gz", &gzip(&good)[..12], "gzip");
    let (absent, _clean) = tmp("absent");
    assert!(matches!(read_idx(absent), Err(Error::Io { .. })));
}

/// gzip is read as gzip readers do: every member of a multi-member file, nothing after the
/// last one, and no declared size the compressed bytes cannot hold.
#[test]
fn gzip_members_trailing_bytes_and_impossible_sizes() {
    let good = [header(0x08, &[2, 3]), vec![1, 2, 3, 4, 5, 6]].concat();
    // Two members (as `cat a.gz b.gz` makes) are one valid stream.
    let (p, _clean) = tmp("two-members.gz");
    std::fs::write(&p, [gzip(&good[..7]), gzip(&good[7..])].concat()).unwrap();
    let arr = read_idx(&p).unwrap();
    assert_eq!((arr.dims, arr.data), (vec![2, 3], good[12..].to_vec()));
    // Bytes after the last member are an error, as they are after a raw file's payload.
    expect_malformed(
        "trailing.gz",
        &[gzip(&good), b"garbage".to_vec()].concat(),
        "gzip",
    );
    expect_malformed(
        "trailing-raw",
        &[good.clone(), b"garbage".to_vec()].concat(),
        "longer",
    );
    // Another member with more data is more payload than declared.
    expect_malformed(
        "extra-member.gz",
        &[gzip(&good), gzip(&[9, 9])].concat(),
        "longer",
    );
    // 300 MB declared, a few hundred bytes given: refused before decompressing anything.
    let bomb = gzip(&[header(0x08, &[300, 1000, 1000]), vec![0; 100_000]].concat());
    assert!(bomb.len() < 1000, "{}", bomb.len());
    expect_malformed("bomb.gz", &bomb, "compressed bytes");
}

#[test]
fn mismatched_image_and_label_counts_are_an_error() {
    let (dir, _clean) = tmp("mismatch");
    std::fs::create_dir_all(&dir).unwrap();
    write_idx_u8(dir.join("train-images-idx3-ubyte"), &[3, 2, 2], &[0; 12]).unwrap();
    write_idx_u8(dir.join("train-labels-idx1-ubyte"), &[2], &[0, 1]).unwrap();
    write_idx_u8(dir.join("t10k-images-idx3-ubyte"), &[1, 2, 2], &[0; 4]).unwrap();
    write_idx_u8(dir.join("t10k-labels-idx1-ubyte"), &[1], &[0]).unwrap();
    let e = mnist::load_dir(&dir).unwrap_err().to_string();
    assert!(
        e.contains("train-labels-idx1-ubyte") && e.contains("2 labels for 3 images"),
        "{e}"
    );
    std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte")).unwrap();
    let e = mnist::load_dir(&dir).unwrap_err().to_string();
    assert!(
        e.contains("t10k-labels-idx1-ubyte") && e.contains("not found"),
        "{e}"
    );
}
