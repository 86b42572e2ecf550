//! Kernel source from a rule's formula: the element-wise update as C, for any [`Rule`].
//!
//! [`KernelSource::of`] runs [`update`] once over [`Expr`], a lane that records each
//! operation as a C statement instead of computing it. The result is the loop body of the
//! rule's fused step: parameter, gradient and state in, new parameter and state out, with
//! every hyperparameter and per-step scalar read from an argument array `c`, so one
//! compiled kernel serves every step for as long as the rule takes the same branches
//! (RAdam switches once, when its rectification turns on; key a cache by the source).
//!
//! [`KernelSource::cuda`] wraps the body in a CUDA kernel (one thread per element) and
//! [`KernelSource::c`] in a plain C loop. The tests compile the C form with the system's C
//! compiler and check it against the fused CPU path for every optimizer, and compile every
//! rule's CUDA form with NVRTC (`tests/nvrtc.rs`). With feature `cuda` the optimizer
//! launches the CUDA form on candle's storage (`backends/cuda.rs`). The operations map one
//! to one onto the fused CPU loop's, so with `-ffp-contract=off` the C form is
//! bit-identical to it; NVRTC is asked for the same (no fused multiply-adds, IEEE division
//! and square roots).

use std::cell::RefCell;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::rc::Rc;

use crate::engine::lane::Lane;
use crate::engine::rule::{normed, update, Rule};

/// The statements and constants recorded so far.
#[derive(Debug, Default)]
struct Builder {
    stmts: Vec<String>,
    constants: Vec<f64>,
}

/// A symbolic lane: a C expression naming one recorded value (an input or a temporary).
#[derive(Debug, Clone)]
pub struct Expr {
    builder: Rc<RefCell<Builder>>,
    name: String,
}

impl Expr {
    fn input(builder: &Rc<RefCell<Builder>>, name: &str) -> Self {
        Expr {
            builder: builder.clone(),
            name: name.to_string(),
        }
    }

    /// Records `T tN = rhs;` and returns `tN`.
    fn tmp(&self, rhs: String) -> Result<Self, Infallible> {
        let mut b = self.builder.borrow_mut();
        let name = format!("t{}", b.stmts.len());
        b.stmts.push(format!("T {name} = {rhs};"));
        Ok(Expr {
            builder: self.builder.clone(),
            name,
        })
    }

    /// Records a constant and returns its C name `c[i]`.
    fn constant(&self, v: f64) -> String {
        let mut b = self.builder.borrow_mut();
        b.constants.push(v);
        format!("c[{}]", b.constants.len() - 1)
    }
}

impl Lane for Expr {
    type Err = Infallible;
    fn add(&self, o: &Self) -> Result<Self, Infallible> {
        self.tmp(format!("{} + {}", self.name, o.name))
    }
    fn sub(&self, o: &Self) -> Result<Self, Infallible> {
        self.tmp(format!("{} - {}", self.name, o.name))
    }
    fn mul(&self, o: &Self) -> Result<Self, Infallible> {
        self.tmp(format!("{} * {}", self.name, o.name))
    }
    fn div(&self, o: &Self) -> Result<Self, Infallible> {
        self.tmp(format!("{} / {}", self.name, o.name))
    }
    fn affine(&self, a: f64, b: f64) -> Result<Self, Infallible> {
        let (a, b) = (self.constant(a), self.constant(b));
        self.tmp(format!("{} * {a} + {b}", self.name))
    }
    fn scale(&self, a: f64) -> Result<Self, Infallible> {
        let a = self.constant(a);
        self.tmp(format!("{} * {a}", self.name))
    }
    fn sqrt(&self) -> Result<Self, Infallible> {
        self.tmp(format!("SQRT({})", self.name))
    }
    fn abs(&self) -> Result<Self, Infallible> {
        self.tmp(format!("ABS({})", self.name))
    }
    fn sign(&self) -> Result<Self, Infallible> {
        let x = &self.name;
        self.tmp(format!("(T)(({x} > 0) - ({x} < 0))"))
    }
    fn maximum(&self, o: &Self) -> Result<Self, Infallible> {
        // The fused CPU loop's rule: `a > b ? a : b`.
        let (a, b) = (&self.name, &o.name);
        self.tmp(format!("{a} > {b} ? {a} : {b}"))
    }
}

/// The element type `T` and the math the body uses (`SQRT`, `ABS`), for `float` or
/// `double`; shared by the CUDA and C forms.
fn prelude(ty: &str) -> String {
    let (sqrt, abs) = if ty == "float" {
        ("sqrtf", "fabsf")
    } else {
        ("sqrt", "fabs")
    };
    format!("typedef {ty} T;\n#define SQRT {sqrt}\n#define ABS {abs}\n")
}

/// The most constants (hyperparameters and per-step scalars) one CUDA kernel takes: they
/// travel by value in its argument buffer, 512 bytes in double. Every rule in this crate
/// uses far fewer; a rule that needs more takes candle tensor ops on the GPU.
pub const MAX_KERNEL_CONSTANTS: usize = 64;

/// One rule's update as C: inputs `p_`, `g_`, `s0_`, `s1_`, …; statements over `T` (the
/// element type) and `SQRT`/`ABS`; outputs written back to `p`, `s0`, `s1`, ….
#[derive(Debug, Clone, PartialEq)]
pub struct KernelSource {
    /// The element-wise statements, ending with the stores.
    pub body: String,
    /// Values of `c[0]`, `c[1]`, …: hyperparameters and this step's scalars.
    pub constants: Vec<f64>,
    /// Number of state tensors (`s0`, `s1`, …).
    pub states: usize,
}

impl KernelSource {
    /// The update of `rule` at a step whose scalars are `s` (from [`Rule::prepare`]).
    ///
    /// ```
    /// use taper_optim::{Adam, KernelSource, Rule, Slots};
    /// let adam = Adam::new(1e-3);
    /// let s = adam.prepare(1, &mut Slots::new(&mut []));
    /// let k = KernelSource::of(&adam, &s);
    /// assert_eq!(k.states, 2); // exp_avg, exp_avg_sq
    /// let cuda = k.cuda("float");
    /// assert!(cuda.contains(
    ///     "__global__ void taper_step(T* p, const T* g, T* s0, T* s1, const TaperConsts cs"
    /// ));
    /// assert!(cuda.contains("s1[i] = "));
    /// // Step 2 has other bias corrections but the same code: only the constants change.
    /// let k2 = KernelSource::of(&adam, &adam.prepare(2, &mut Slots::new(&mut [])));
    /// assert_eq!(k2.body, k.body);
    /// assert_ne!(k2.constants, k.constants);
    /// ```
    pub fn of<R: Rule>(rule: &R, s: &R::Step) -> Self {
        Self::record(rule, |p, g, st| {
            let Ok(new_p) = update(rule, s, p, g, st);
            let mut stores = format!("p[i] = {};\n", new_p.name);
            for (k, e) in st.iter().enumerate() {
                let _ = writeln!(stores, "s{k}[i] = {};", e.name);
            }
            stores
        })
    }

    /// The norm pass of a rule that [`Rule::needs_norms`] (LAMB, LARS): the body computes
    /// [`Rule::normed`]'s u from the same inputs as [`KernelSource::of`], writes nothing, and
    /// adds θ² and u² (in double) to `acc[0]` and `acc[1]`. The host takes the square roots,
    /// hands them to [`Rule::set_norms`] and builds the update kernel from the resulting
    /// step, whose trust ratio is one more constant. [`KernelSource::c_norms`] is its C form;
    /// on CUDA this pass runs today as candle tensor ops (the generic path's norm pass).
    ///
    /// ```
    /// use taper_optim::{KernelSource, Lamb, Rule, Slots};
    /// let lamb = Lamb::new(1e-3).weight_decay(0.01);
    /// let s = lamb.prepare(1, &mut Slots::new(&mut []));
    /// let k = KernelSource::norms_of(&lamb, &s);
    /// assert!(k.body.contains("acc[1] += "));
    /// assert!(!k.body.contains("s0[i] ="), "the norm pass stores no state");
    /// ```
    pub fn norms_of<R: Rule>(rule: &R, s: &R::Step) -> Self {
        Self::record(rule, |p, g, st| {
            let Ok(u) = normed(rule, s, p, g, st);
            format!(
                "acc[0] += (double)p_ * (double)p_;\nacc[1] += (double){u} * (double){u};\n",
                u = u.name
            )
        })
    }

    /// Runs `f` over symbolic inputs and returns the recorded statements followed by the
    /// text `f` returns.
    fn record(rule: &impl Rule, f: impl FnOnce(&Expr, &Expr, &mut [Expr]) -> String) -> Self {
        let b = Rc::new(RefCell::new(Builder::default()));
        let states = rule.slots().len();
        let (p, g) = (Expr::input(&b, "p_"), Expr::input(&b, "g_"));
        let mut st: Vec<Expr> = (0..states)
            .map(|k| Expr::input(&b, &format!("s{k}_")))
            .collect();
        let tail = f(&p, &g, &mut st);
        let mut b = b.borrow_mut();
        let mut body = String::new();
        for line in &b.stmts {
            let _ = writeln!(body, "{line}");
        }
        body += &tail;
        KernelSource {
            body,
            constants: std::mem::take(&mut b.constants),
            states,
        }
    }

    /// Loads of the inputs, shared by both forms.
    fn loads(&self) -> String {
        let mut s = String::from("T p_ = p[i]; T g_ = g[i];");
        for k in 0..self.states {
            let _ = write!(s, " T s{k}_ = s{k}[i];");
        }
        s
    }

    /// The argument list: `T* p, const T* g, T* s0, …`, then `consts` (the constants
    /// parameter) and `n` of type `size_t`.
    fn params(&self, consts: &str, size_t: &str) -> String {
        let mut s = String::from("T* p, const T* g");
        for k in 0..self.states {
            let _ = write!(s, ", T* s{k}");
        }
        let _ = write!(s, ", {consts}, {size_t} n");
        s
    }

    /// A CUDA kernel `taper_step` over `ty` (`"float"` or `"double"`), one thread per
    /// element, for NVRTC. The constants travel by value in the launch's argument buffer
    /// (a struct of [`MAX_KERNEL_CONSTANTS`] values of `ty`), so a step uploads nothing and
    /// allocates nothing on the device.
    pub fn cuda(&self, ty: &str) -> String {
        format!(
            "{}struct TaperConsts {{ T v[{MAX_KERNEL_CONSTANTS}]; }};\n\
             extern \"C\" __global__ void taper_step({}) {{\n\
             unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;\n\
             if (i >= n) return;\nconst T* c = cs.v;\n{}\n{}}}\n",
            prelude(ty),
            self.params("const TaperConsts cs", "unsigned long long"),
            self.loads(),
            self.body
        )
    }

    /// [`KernelSource::cuda`] compiled to PTX by NVRTC for `arch` (e.g. `"compute_90"`),
    /// as it is before a launch; no GPU is needed. The PTX is cached per source for the
    /// life of the process (see [`compiled_kernels`](crate::compiled_kernels)). Feature
    /// `nvrtc` or `cuda`.
    #[cfg(any(feature = "nvrtc", feature = "cuda"))]
    pub fn ptx(&self, ty: &str, arch: &'static str) -> crate::error::Result<String> {
        self.check_constants(ty)?;
        Ok(
            crate::backends::nvrtc::compiled(&self.cuda(ty), ty, Some(arch))?
                .ptx
                .clone(),
        )
    }

    /// An error when the step's constants do not fit the CUDA kernel's argument struct.
    #[cfg(any(feature = "nvrtc", feature = "cuda"))]
    fn check_constants(&self, ty: &str) -> crate::error::Result<()> {
        if self.constants.len() > MAX_KERNEL_CONSTANTS {
            return Err(crate::error::Error::KernelCompile {
                ty: ty.to_string(),
                reason: format!(
                    "the update uses {} constants, more than MAX_KERNEL_CONSTANTS = \
                     {MAX_KERNEL_CONSTANTS}",
                    self.constants.len()
                ),
            });
        }
        Ok(())
    }

    /// A [`KernelSource::norms_of`] body as a C11 function `name(p, g, s0, …, c, n, acc)`
    /// that adds Σθ² and Σu² over `n` elements of `ty` to `acc[0]` and `acc[1]`.
    pub fn c_norms(&self, ty: &str, name: &str) -> String {
        let mut params = String::from("const T* p, const T* g");
        for k in 0..self.states {
            let _ = write!(params, ", const T* s{k}");
        }
        format!(
            "{}static void {name}({params}, const T* c, size_t n, double* acc) {{\n\
             for (size_t i = 0; i < n; i++) {{\n{}\n{}}}\n}}\n#undef SQRT\n#undef ABS\n",
            prelude(ty),
            self.loads(),
            self.body
        )
    }

    /// The same update as a C11 function `name` looping over `n` elements of `ty` (it
    /// typedefs `T`; several of these may share one file, for one `ty`).
    pub fn c(&self, ty: &str, name: &str) -> String {
        format!(
            "{}static void {name}({}) {{\nfor (size_t i = 0; i < n; i++) {{\n{}\n{}}}\n}}\n\
             #undef SQRT\n#undef ABS\n",
            prelude(ty),
            self.params("const T* c", "size_t"),
            self.loads(),
            self.body
        )
    }
}
