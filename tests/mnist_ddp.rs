//! The `mnist_ddp` example as a user runs it: `mpirun -np 2` for two epochs, then resumed
//! from rank 0's checkpoint on one rank for a third. Needs the `mpi` feature (the example
//! requires it) and Open MPI's `mpirun`; skips, saying so, without them.

#![cfg(feature = "mpi")]

use std::process::Command;

use taper::dist::Launcher;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("start mpirun");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

#[test]
fn mnist_ddp_trains_on_two_ranks_and_resumes_on_one() {
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples").join("mnist_ddp"))
        .unwrap();
    if !bin.exists() {
        println!(
            "skipped: {} is not built (cargo test --features mpi builds it)",
            bin.display()
        );
        return;
    }
    let launcher = match Launcher::mpirun() {
        Ok(l) => l,
        Err(e) => {
            println!("skipped: {e}");
            return;
        }
    };
    let dir = std::env::temp_dir().join(format!("taper-mnist-ddp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.to_str().unwrap();
    let two = run(launcher
        .clone()
        .env("RAYON_NUM_THREADS", "1")
        .command(2, &bin)
        .args(["--epochs", "2", "--hidden", "64", "--zero", "--out", out]));
    println!("{two}");
    assert!(two.contains("2 rank(s)"), "{two}");
    assert!(two.contains("epoch  2:"), "{two}");
    let acc: f64 = two
        .lines()
        .rev()
        .find_map(|l| {
            l.split("test accuracy ")
                .nth(1)?
                .split('%')
                .next()?
                .parse()
                .ok()
        })
        .unwrap();
    assert!(acc > 90.0, "{acc}");

    let one = run(launcher
        .command(1, &bin)
        .args(["--epochs", "3", "--hidden", "64", "--resume", "--out", out]));
    println!("{one}");
    assert!(one.contains("written by 2 rank(s)"), "{one}");
    assert!(
        !one.contains("epoch  2:") && one.contains("epoch  3:"),
        "{one}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
