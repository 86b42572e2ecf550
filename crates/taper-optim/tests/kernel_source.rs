//! The C form of every rule's generated kernel ([`KernelSource`]), compiled with the system's
//! C compiler, matches the fused CPU path over several steps: parameter and every state
//! tensor. Skips, saying why, where no C compiler is installed.

use std::fmt::Write as _;
use std::process::Command;

use taper_optim::*;
use taper_tensor::{DType, Device, Gradients, ParamStore, Tensor};

const N: usize = 37; // not a multiple of the fused loop's 8-wide blocks
const STEPS: u64 = 6;

fn grad(step: u64) -> Vec<f32> {
    (0..N)
        .map(|i| ((i as f32 * 0.7 + step as f32).sin() * 0.5) + if i % 5 == 0 { 0.0 } else { 0.01 })
        .collect()
}

fn floats(v: &[f32]) -> String {
    v.iter()
        .map(|x| format!("{x:e}f"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Taper's fused CPU result: the parameter, then each state tensor.
fn taper<R: Rule>(rule: &R, p0: &[f32]) -> Vec<Vec<f32>> {
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    store
        .parameter("w", N, |_, _, d| Ok(Tensor::from_vec(p0.to_vec(), N, d)?))
        .unwrap();
    let mut opt = Optimizer::new(rule.clone(), &store).unwrap();
    for step in 1..=STEPS {
        let mut g = Gradients::default();
        g.insert("w", Tensor::from_vec(grad(step), N, &Device::Cpu).unwrap());
        opt.step(&g).unwrap();
    }
    let mut out = vec![store
        .var("w")
        .unwrap()
        .as_tensor()
        .to_vec1::<f32>()
        .unwrap()];
    for t in &opt.state("w").unwrap().tensors {
        out.push(t.to_vec1::<f32>().unwrap());
    }
    out
}

/// The generated C, compiled and run: the same vectors.
fn generated<R: Rule>(name: &str, rule: &R, p0: &[f32], cc: &str) -> Vec<Vec<f32>> {
    let k = rule.state_names().len();
    let mut src = String::from("#include <math.h>\n#include <stdio.h>\n#include <stddef.h>\n");
    let mut calls = String::new();
    let mut scalars: Vec<f64> = rule
        .scalars()
        .iter()
        .map(|&slot| rule.initial_scalar(slot))
        .collect();
    for step in 1..=STEPS {
        let s = rule.prepare(step, &mut Slots::new(&mut scalars));
        let ks = KernelSource::of(rule, &s);
        assert_eq!(ks.states, k);
        src += &ks.c("float", &format!("step{step}"));
        let c: Vec<f32> = ks.constants.iter().map(|&v| v as f32).collect();
        let _ = writeln!(
            src,
            "static const T c{step}[] = {{ {}0 }};",
            floats(&c) + if c.is_empty() { "" } else { ", " }
        );
        let _ = writeln!(
            src,
            "static const T g{step}[] = {{ {} }};",
            floats(&grad(step))
        );
        let states: String = (0..k).map(|j| format!("s{j}, ")).collect();
        let _ = writeln!(calls, "step{step}(p, g{step}, {states}c{step}, {N});");
    }
    let _ = writeln!(src, "static T p[] = {{ {} }};", floats(p0));
    for (j, &slot) in rule.slots().iter().enumerate() {
        let init = vec![rule.initial_state(slot) as f32; N];
        let _ = writeln!(src, "static T s{j}[] = {{ {} }};", floats(&init));
    }
    let _ = write!(src, "int main(void) {{\n{calls}");
    let prints: String = std::iter::once("p".to_string())
        .chain((0..k).map(|j| format!("s{j}")))
        .map(|a| format!("for (int i = 0; i < {N}; i++) printf(\"%.9g \", (double){a}[i]); printf(\"\\n\");\n"))
        .collect();
    src += &prints;
    src += "return 0;\n}\n";
    to_f32(compile_run(name, &src, cc))
}

fn to_f32(v: Vec<Vec<f64>>) -> Vec<Vec<f32>> {
    v.into_iter()
        .map(|l| l.into_iter().map(|x| x as f32).collect())
        .collect()
}

/// Compiles `src` with `cc` and runs it, returning each printed line's numbers.
fn compile_run(name: &str, src: &str, cc: &str) -> Vec<Vec<f64>> {
    let dir = std::env::temp_dir().join(format!("taper-kernel-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (c_file, exe) = (dir.join("k.c"), dir.join("k"));
    std::fs::write(&c_file, src).unwrap();
    let built = Command::new(cc)
        .args(["-std=c11", "-O1", "-ffp-contract=off", "-o"])
        .arg(&exe)
        .arg(&c_file)
        .arg("-lm")
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{name}: generated C does not compile:\n{}\n{src}",
        String::from_utf8_lossy(&built.stderr)
    );
    let run = Command::new(&exe).output().unwrap();
    assert!(run.status.success(), "{name}: generated program failed");
    let _ = std::fs::remove_dir_all(&dir);
    String::from_utf8(run.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|x| x.parse::<f64>().unwrap())
                .collect()
        })
        .collect()
}

/// For a rule that [`Rule::needs_norms`]: per step, the generated norm pass in C, its sums
/// handed to [`Rule::set_norms`] on the Rust side, then the generated update in C. One
/// program per pass, chained through printed values (`%.9g` round-trips a float exactly).
fn generated_with_norms<R: Rule>(name: &str, rule: &R, p0: &[f32], cc: &str) -> Vec<Vec<f32>> {
    let k = rule.state_names().len();
    let mut scalars: Vec<f64> = rule
        .scalars()
        .iter()
        .map(|&slot| rule.initial_scalar(slot))
        .collect();
    let mut vals: Vec<Vec<f32>> = std::iter::once(p0.to_vec())
        .chain(
            rule.slots()
                .iter()
                .map(|&slot| vec![rule.initial_state(slot) as f32; N]),
        )
        .collect();
    let states: String = (0..k).map(|j| format!("s{j}, ")).collect();
    for step in 1..=STEPS {
        let program = |func: String, constants: &[f64], vals: &[Vec<f32>], main: String| {
            let mut src =
                format!("#include <math.h>\n#include <stdio.h>\n#include <stddef.h>\n{func}");
            let c: Vec<f32> = constants.iter().map(|&v| v as f32).collect();
            let _ = writeln!(
                src,
                "static const T c[] = {{ {}0 }};",
                floats(&c) + if c.is_empty() { "" } else { ", " }
            );
            let _ = writeln!(src, "static const T g[] = {{ {} }};", floats(&grad(step)));
            let _ = writeln!(src, "static T p[] = {{ {} }};", floats(&vals[0]));
            for (j, v) in vals[1..].iter().enumerate() {
                let _ = writeln!(src, "static T s{j}[] = {{ {} }};", floats(v));
            }
            src + &format!("int main(void) {{\n{main}return 0;\n}}\n")
        };
        let mut s = rule.prepare(step, &mut Slots::new(&mut scalars));
        let ks = KernelSource::norms_of(rule, &s);
        let src = program(
            ks.c_norms("float", "norms"),
            &ks.constants,
            &vals,
            format!(
                "double acc[2] = {{0, 0}};\nnorms(p, g, {states}c, {N}, acc);\n\
                 printf(\"%.17g %.17g\\n\", acc[0], acc[1]);\n"
            ),
        );
        let out = compile_run(name, &src, cc);
        let sums = &out[0];
        rule.set_norms(
            &mut s,
            TensorNorms {
                param: sums[0].sqrt(),
                update: sums[1].sqrt(),
                len: N,
            },
        );
        let ks = KernelSource::of(rule, &s);
        let prints: String = std::iter::once("p".to_string())
            .chain((0..k).map(|j| format!("s{j}")))
            .map(|a| format!("for (int i = 0; i < {N}; i++) printf(\"%.9g \", (double){a}[i]); printf(\"\\n\");\n"))
            .collect();
        let src = program(
            ks.c("float", "step"),
            &ks.constants,
            &vals,
            format!("step(p, g, {states}c, {N});\n{prints}"),
        );
        vals = to_f32(compile_run(name, &src, cc));
    }
    vals
}

fn check<R: Rule>(name: &str, rule: R, cc: &str) -> f32 {
    if rule.whole_tensor(&[N]) {
        println!(
            "{name}: no kernel: {} steps whole tensors (Rule::whole_tensor)",
            R::NAME
        );
        return 0.0;
    }
    let p0: Vec<f32> = (0..N).map(|i| (i as f32 * 0.37).cos()).collect();
    let got = if rule.needs_norms() {
        generated_with_norms(name, &rule, &p0, cc)
    } else {
        generated(name, &rule, &p0, cc)
    };
    let want = taper(&rule, &p0);
    assert_eq!(want.len(), got.len(), "{name}: state count");
    let mut worst = 0f32;
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(w.len(), g.len());
        for (a, b) in w.iter().zip(g) {
            let err = f32::abs(a - b) / (1.0 + f32::abs(*a));
            assert!(err <= 1e-6, "{name}: fused {a} vs generated C {b}");
            worst = worst.max(err);
        }
    }
    worst
}

#[test]
fn generated_c_matches_the_fused_cpu_path_for_every_rule() {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    if Command::new(&cc).arg("--version").output().is_err() {
        println!("skipped: no C compiler `{cc}` (set CC or install gcc)");
        return;
    }
    // Every registered configuration (at a rate that moves these small tensors), then
    // the shared options and option combinations the registry does not show.
    struct Each<'a> {
        cc: &'a str,
        worst: f32,
        count: usize,
    }
    impl Visitor for Each<'_> {
        fn visit<R: Rule>(&mut self, entry: &Entry, mut rule: R) {
            let lr = match entry.family {
                Family::Sign => 1e-3,
                _ => 0.01,
            };
            let lr = if R::NAME == "Adadelta" { 1.0 } else { lr };
            rule.common_mut().lr = lr;
            self.worst = self.worst.max(check(entry.key, rule, self.cc));
            self.count += 1;
        }
    }
    let mut each = Each {
        cc: &cc,
        worst: 0.0,
        count: 0,
    };
    visit_optimizers(&mut each);
    let (mut worst, mut count) = (each.worst, each.count);
    macro_rules! case {
        ($name:expr, $rule:expr) => {
            worst = worst.max(check($name, $rule, &cc));
            count += 1;
        };
    }
    case!(
        "sgd_dampened_l2",
        Sgd::new(0.1)
            .momentum(Momentum::Classic {
                momentum: 0.9,
                dampening: 0.1,
            })
            .weight_decay(WeightDecay::L2(0.01))
    );
    case!(
        "sgd_ema_maximize",
        Sgd::new(0.1)
            .momentum(Momentum::Ema { beta: 0.9 })
            .maximize(true)
    );
    case!(
        "adagrad_lr_decay",
        Adagrad::new(0.1)
            .lr_decay(0.01)
            .initial_accumulator_value(0.1)
    );
    case!(
        "adadelta_l2",
        Adadelta::default().weight_decay(WeightDecay::L2(0.01))
    );
    case!(
        "lion_decoupled",
        Lion::new(1e-3).weight_decay(WeightDecay::Decoupled(0.1))
    );
    case!("asgd_averaging", Asgd::new(0.05).lambd(0.01).t0(2.0));
    case!(
        "lamb_decay",
        Lamb::new(0.01).weight_decay(0.1).eps_root(1e-8)
    );
    case!(
        "lars_nesterov_decay",
        Lars::new(1.0).nesterov(true).weight_decay(0.01).eps(1e-8)
    );
    println!("{count} rule configurations; largest relative difference {worst:e}");
}
