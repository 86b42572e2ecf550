//! Every rule's generated CUDA kernel compiles with NVRTC, in float and double, for sm_90
//! (H100/H200), on a machine without a GPU; its PTX parameter list is what the fused CUDA
//! step passes at launch; NVRTC runs once per distinct source (the cache). Feature `nvrtc`;
//! needs libnvrtc.so.13 on the library path (`. scripts/cuda-env.sh` installs it from the
//! pinned wheel). Skips, saying why, without it. Launching the kernels needs a GPU: that is
//! `tests/gpu.rs` in the repository root.

#![cfg(feature = "nvrtc")]

use std::collections::HashSet;

use taper_optim::*;

const ARCH: &str = "compute_90";

/// NVRTC loads on first use and cudarc panics when it cannot: probe once.
fn nvrtc_loads() -> std::result::Result<(), String> {
    let probe = std::panic::catch_unwind(|| {
        cudarc::nvrtc::compile_ptx("extern \"C\" __global__ void probe() {}").map(|_| ())
    });
    match probe {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("NVRTC failed on an empty kernel: {e:?}")),
        Err(_) => Err("libnvrtc.so.13 could not be loaded (source scripts/cuda-env.sh)".into()),
    }
}

/// The parameter list of the PTX entry `taper_step`, one declaration per parameter with
/// its name dropped (e.g. `.param .u64`, `.param .align 8 .b8 [512]`).
fn entry_params(ptx: &str) -> Vec<String> {
    let start = ptx.find(".entry taper_step(").expect("an entry") + ".entry taper_step(".len();
    let end = start + ptx[start..].find(')').expect("a closed parameter list");
    ptx[start..end]
        .split(',')
        .map(|p| {
            let p = p.trim();
            // `.param .align 8 .b8 taper_step_param_4[512]` -> `.param .align 8 .b8 [512]`
            let name = p.find("taper_step_param_").expect("a parameter name");
            let rest = &p[name..];
            let suffix = rest.find('[').map_or("", |i| &rest[i..]);
            format!("{}{suffix}", &p[..name])
        })
        .collect()
}

/// What `backends/cuda.rs` passes at launch, as PTX declares it: a 64-bit device pointer for
/// the parameter, the gradient and each state tensor; the constants by value, as
/// `MAX_KERNEL_CONSTANTS` values of the element type; the element count as a u64.
fn launch_abi(states: usize, ty: &str) -> Vec<String> {
    let size = if ty == "float" { 4 } else { 8 };
    let mut abi = vec![".param .u64 ".to_string(); 2 + states];
    abi.push(format!(
        ".param .align {size} .b8 [{}]",
        size * MAX_KERNEL_CONSTANTS
    ));
    abi.push(".param .u64 ".to_string());
    abi
}

struct Each {
    compiled: usize,
    skipped: Vec<String>,
    /// Every distinct source asked for: the cache must have compiled each exactly once.
    sources: HashSet<String>,
    /// The most constants any kernel takes.
    most_constants: usize,
}

impl Visitor for Each {
    fn visit<R: Rule>(&mut self, entry: &Entry, rule: R) {
        if rule.whole_tensor(&[64, 64]) {
            self.skipped.push(format!(
                "{}: steps whole tensors with candle ops (Rule::whole_tensor), no kernel",
                entry.key
            ));
            return;
        }
        let mut scalars: Vec<f64> = rule
            .scalars()
            .iter()
            .map(|&s| rule.initial_scalar(s))
            .collect();
        // Steps 1 and 2: the code is the same, only the constants change; compile both to
        // be sure nothing step-dependent reaches the source.
        for step in 1..=2 {
            let s = rule.prepare(step, &mut Slots::new(&mut scalars));
            let k = KernelSource::of(&rule, &s);
            assert!(
                k.constants.len() <= MAX_KERNEL_CONSTANTS,
                "{}: {} constants do not fit the kernel's argument struct",
                entry.key,
                k.constants.len()
            );
            self.most_constants = self.most_constants.max(k.constants.len());
            for ty in ["float", "double"] {
                self.sources.insert(k.cuda(ty));
                let ptx = k.ptx(ty, ARCH).unwrap_or_else(|e| {
                    panic!("{} ({ty}, step {step}): {e}\n{}", entry.key, k.cuda(ty))
                });
                assert!(ptx.contains(".entry taper_step"), "{}: {ptx}", entry.key);
                assert_eq!(
                    entry_params(&ptx),
                    launch_abi(k.states, ty),
                    "{} ({ty}): the kernel's parameters are not what the launch passes",
                    entry.key
                );
                assert!(ptx.contains(".target sm_90"), "{}: {ptx}", entry.key);
                let fty = if ty == "float" { ".f32" } else { ".f64" };
                assert!(
                    ptx.contains(fty),
                    "{} ({ty}): no {fty} arithmetic in the PTX",
                    entry.key
                );
                self.compiled += 1;
            }
        }
    }
}

#[test]
fn every_rules_cuda_kernel_compiles_with_nvrtc() {
    if let Err(why) = nvrtc_loads() {
        println!("skipped: {why}");
        return;
    }
    let mut each = Each {
        compiled: 0,
        skipped: Vec::new(),
        sources: HashSet::new(),
        most_constants: 0,
    };
    visit_optimizers(&mut each);
    for s in &each.skipped {
        println!("{s}");
    }
    println!(
        "{} kernels compiled to PTX for {ARCH}: {} distinct sources, the rest from the cache; \
         at most {} constants of {MAX_KERNEL_CONSTANTS}",
        each.compiled,
        each.sources.len(),
        each.most_constants
    );
    assert!(each.compiled >= 4 * 15, "{}", each.compiled);
    // Steps 1 and 2 share their source, and so do configurations that differ only in
    // hyperparameter values: NVRTC ran once per distinct source. (The other test in this
    // file only adds a source NVRTC refuses, which is not cached.)
    assert!(each.sources.len() < each.compiled);
    assert_eq!(compiled_kernels(), each.sources.len());
}

#[test]
fn a_kernel_nvrtc_refuses_is_an_error_with_its_log() {
    if let Err(why) = nvrtc_loads() {
        println!("skipped: {why}");
        return;
    }
    let adam = Adam::new(1e-3);
    let mut k = KernelSource::of(&adam, &adam.prepare(1, &mut Slots::new(&mut [])));
    k.body.push_str("this is not C;\n");
    let err = k.ptx("float", ARCH).unwrap_err().to_string();
    assert!(
        err.contains("does not compile") && err.contains("float"),
        "{err}"
    );
}
