//! Downloads against a local HTTP server on 127.0.0.1 serving the shipped files
//! (feature `download`): success, checksum mismatch, missing file.

#![cfg(feature = "download")]

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use common::TmpDir;
use taper_data::download::download_from;
use taper_data::mnist;

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist-10k");

/// Serves files from `root` on 127.0.0.1 for a bounded number of requests and time.
fn serve(root: &'static str, max_requests: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut served = 0;
        while served < max_requests && Instant::now() < deadline {
            let Ok((mut s, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            served += 1;
            s.set_nonblocking(false).unwrap();
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/')
                .to_string();
            match std::fs::read(Path::new(root).join(&path)) {
                Ok(body) => {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(head.as_bytes());
                    let _ = s.write_all(&body);
                }
                Err(_) => {
                    let _ = s.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            }
        }
    });
    format!("http://{addr}/")
}

fn sums() -> Vec<(&'static str, &'static str)> {
    // The shipped subset's SHA-256, from its README.
    vec![
        (
            "train-images-idx3-ubyte.gz",
            "3326beaf4727689e994746452bac676933c544d8f22e8b4bc98658579828553f",
        ),
        (
            "train-labels-idx1-ubyte.gz",
            "2bb6bcfb53666477140601049deed48bb3482bd20a820461891eab554910484c",
        ),
        (
            "t10k-images-idx3-ubyte.gz",
            "1543d6d3a7bf6ac09da7690586dc2a9d3c2616fd07af2a90a6d8e1dd08735d4e",
        ),
        (
            "t10k-labels-idx1-ubyte.gz",
            "6fe13426dbe179377a3a9c1b5de8feb3f7632bae335960c691f04da0329e573b",
        ),
    ]
}

/// A directory path that does not exist yet (the download creates it), removed when dropped.
fn fresh_dir(name: &str) -> TmpDir {
    TmpDir::fresh("dl", name)
}

#[test]
fn downloads_verifies_and_loads() {
    let url = serve(SHIPPED, 4);
    let dir = fresh_dir("ok");
    download_from(&url, &sums(), &dir).unwrap();
    let m = mnist::load_dir(&dir).unwrap();
    assert_eq!(m.train.inputs().dims()[0], 8000);
    // Present and verified files are not fetched again (the server has no requests left).
    download_from(&url, &sums(), &dir).unwrap();
}

#[test]
fn a_checksum_mismatch_fails_and_leaves_no_partial_file() {
    let url = serve(SHIPPED, 1);
    let dir = fresh_dir("bad");
    let wrong = [(
        "t10k-labels-idx1-ubyte.gz",
        "0000000000000000000000000000000000000000000000000000000000000000",
    )];
    let e = download_from(&url, &wrong, &dir).unwrap_err().to_string();
    assert!(
        e.contains("SHA-256 mismatch") && e.contains("t10k-labels-idx1-ubyte.gz"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "no partial or bad file remains"
    );
}

#[test]
fn a_missing_file_is_an_error_naming_the_url() {
    let url = serve(SHIPPED, 1);
    let dir = fresh_dir("404");
    let e = download_from(&url, &[("nope.gz", "00")], &dir)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.gz") && e.contains("404"), "{e}");
}
