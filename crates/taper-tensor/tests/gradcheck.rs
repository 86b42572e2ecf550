//! gradcheck passes correct ops and catches a deliberately wrong backward.

use taper_tensor::candle::{CpuStorage, CustomOp1, Layout, Shape};
use taper_tensor::{gradcheck, DType, Device, Error, GradcheckOptions, Tensor};

/// x ↦ x², with a backward that is right (2x) or deliberately wrong (3x).
struct Square {
    wrong: bool,
}

impl CustomOp1 for Square {
    fn name(&self) -> &'static str {
        "square"
    }

    fn cpu_fwd(
        &self,
        s: &CpuStorage,
        l: &Layout,
    ) -> taper_tensor::candle::Result<(CpuStorage, Shape)> {
        let x = s.as_slice::<f64>()?;
        let x = match l.contiguous_offsets() {
            Some((a, b)) => &x[a..b],
            None => taper_tensor::candle::bail!("square: input must be contiguous"),
        };
        Ok((
            CpuStorage::F64(x.iter().map(|v| v * v).collect()),
            l.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> taper_tensor::candle::Result<Option<Tensor>> {
        let k = if self.wrong { 3.0 } else { 2.0 };
        Ok(Some(grad.mul(&arg.affine(k, 0.0)?)?))
    }
}

fn input() -> Tensor {
    Tensor::new(&[[0.7f64, -1.3, 2.1], [0.2, 0.9, -0.4]], &Device::Cpu).unwrap()
}

#[test]
fn passes_correct_gradients() -> taper_tensor::Result<()> {
    let x = input();
    let y = Tensor::new(&[0.3f64, -0.8, 1.1], &Device::Cpu)?;
    // A composite of built-in ops with two inputs and a non-scalar output.
    let f = |xs: &[Tensor]| Ok(xs[0].tanh()?.broadcast_mul(&xs[1].exp()?)?.sum_keepdim(1)?);
    let report = gradcheck(f, &[x.clone(), y], GradcheckOptions::default())?;
    assert!(report.passed, "{report:?}");
    assert_eq!(report.checked, 9);
    assert!(report.max_abs_err < 1e-7, "{report:?}");
    // The custom op with the right backward also passes; f32 inputs are promoted to f64.
    let r = gradcheck(
        |xs| Ok(xs[0].apply_op1(Square { wrong: false })?),
        &[x.to_dtype(DType::F32)?],
        Default::default(),
    )?;
    r.ok()?;
    Ok(())
}

#[test]
fn catches_a_wrong_backward() -> taper_tensor::Result<()> {
    let r = gradcheck(
        |xs| Ok(xs[0].apply_op1(Square { wrong: true })?),
        &[input()],
        Default::default(),
    )?;
    assert!(!r.passed);
    let (input_idx, elem, analytic, numeric) = r.worst.unwrap();
    assert_eq!(input_idx, 0);
    // The worst element is the largest |x|: 2.1 at flat index 2; analytic is 1.5× numeric.
    assert_eq!(elem, 2);
    assert!(
        (analytic / numeric - 1.5).abs() < 1e-6,
        "{analytic} {numeric}"
    );
    let e = r.ok().unwrap_err();
    assert!(matches!(e, Error::GradcheckFailed(_)));
    assert!(e.to_string().contains("element 2"), "{e}");
    Ok(())
}

#[test]
fn rejects_a_bad_eps() {
    let opts = GradcheckOptions {
        eps: 0.0,
        ..Default::default()
    };
    assert!(matches!(
        gradcheck(|xs| Ok(xs[0].clone()), &[input()], opts),
        Err(Error::InvalidValue { field: "eps", .. })
    ));
}
