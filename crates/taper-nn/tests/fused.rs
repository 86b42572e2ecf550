//! The fused CPU nodes (Linear, cross-entropy) equal the unfused computation in values and
//! gradients, and compute no gradient for the constant data batch.

use taper_nn::{cross_entropy, CrossEntropyLoss, Linear, Target};
use taper_tensor::{
    manual_seed, no_grad, randn, DType, Device, Gradients, Module, ParamStore, Tensor,
};

fn close(a: &Tensor, b: &Tensor, tol: f32) {
    let (a, b) = (
        a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
    );
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{x} vs {y}");
    }
}

#[test]
fn fused_linear_and_cross_entropy_match_the_unfused_ops() {
    manual_seed(4);
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let fc = Linear::new(20, 7, &store).unwrap();
    let x = randn((16, 20), 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
    let y = Tensor::new(
        &[0u32, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5, 6, 0, 1],
        &Device::Cpu,
    )
    .unwrap();
    // Fused: Linear's CPU training path and cross_entropy's fast path.
    let logits = fc.forward(&x).unwrap();
    let loss = cross_entropy(&logits, &y).unwrap();
    let fused = Gradients::compute(&loss, &store).unwrap();
    // Unfused: the same math with plain ops and the general cross-entropy.
    let (w, b) = (store.var("weight").unwrap(), store.var("bias").unwrap());
    let logits2 = x
        .matmul(&w.as_tensor().t().unwrap())
        .unwrap()
        .broadcast_add(b.as_tensor())
        .unwrap();
    let loss2 = CrossEntropyLoss::new()
        .forward(&logits2, Target::Classes(&y))
        .unwrap();
    let plain = Gradients::compute(&loss2, &store).unwrap();
    close(&logits, &logits2, 1e-6);
    close(&loss, &loss2, 1e-6);
    for n in ["weight", "bias"] {
        close(fused.get(n).unwrap(), plain.get(n).unwrap(), 1e-5);
    }
    // Evaluation without a graph gives the same logits.
    close(&no_grad(|| fc.forward(&x)).unwrap(), &logits2, 1e-6);
}

#[test]
fn the_constant_data_batch_gets_no_gradient() {
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let fc = Linear::new(8, 3, &store).unwrap();
    let x = Tensor::ones((4, 8), DType::F32, &Device::Cpu).unwrap();
    let loss = fc.forward(&x).unwrap().sqr().unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    assert!(
        grads.get(&x).is_none(),
        "no gradient was computed for the input batch"
    );
    assert!(grads
        .get(store.var("weight").unwrap().as_tensor())
        .is_some());
    // A tracked input still gets its gradient (layers after the first).
    let xv = taper_tensor::Var::from_tensor(&x).unwrap();
    let loss = fc.forward(xv.as_tensor()).unwrap().sum_all().unwrap();
    assert!(loss.backward().unwrap().get(xv.as_tensor()).is_some());
}

#[test]
fn targets_outside_the_classes_still_error_through_the_general_path() {
    let logits = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
    let e = cross_entropy(&logits, &Tensor::new(&[0u32, 5], &Device::Cpu).unwrap()).unwrap_err();
    assert!(e.to_string().contains("5 at position 1"), "{e}");
    // ignore_index (-100) goes through the general path too.
    let l = cross_entropy(&logits, &Tensor::new(&[0i64, -100], &Device::Cpu).unwrap()).unwrap();
    assert!((l.to_scalar::<f32>().unwrap() - 3f32.ln()).abs() < 1e-6);
}

#[test]
fn products_split_across_threads_match_the_unfused_ops_at_training_sizes() {
    // Big enough that the forward and both gradient products are cut into per-thread
    // blocks; a rank-3 tracked input exercises the (*, in) shape and the input gradient.
    manual_seed(9);
    let store = ParamStore::new(&Device::Cpu, DType::F32);
    let fc = Linear::new(300, 200, &store).unwrap();
    let x = randn((2, 32, 300), 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
    let xv = taper_tensor::Var::from_tensor(&x).unwrap();
    let r = randn((2, 32, 200), 0.0, 1.0, DType::F32, &Device::Cpu).unwrap();
    let y = fc.forward(xv.as_tensor()).unwrap();
    let g = y.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    let (w, b) = (store.var("weight").unwrap(), store.var("bias").unwrap());
    let y2 = xv
        .as_tensor()
        .broadcast_matmul(&w.as_tensor().t().unwrap())
        .unwrap()
        .broadcast_add(b.as_tensor())
        .unwrap();
    let g2 = y2.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    close(&y, &y2, 1e-5);
    for t in [xv.as_tensor(), w.as_tensor(), b.as_tensor()] {
        close(g.get(t).unwrap(), g2.get(t).unwrap(), 1e-4);
    }
}

#[test]
fn relu_node_matches_pytorch_values_and_gradient_mask() {
    // f32 CPU (the fused node) and f64 (the generic path) agree with PyTorch's rule: the
    // gradient is g where x > 0 and 0 elsewhere, including at x = 0; NaN stays NaN.
    for dt in [DType::F32, DType::F64] {
        let x = Tensor::new(&[-2.0f32, -0.5, 0.0, 0.25, 3.0, f32::NAN], &Device::Cpu)
            .unwrap()
            .to_dtype(dt)
            .unwrap();
        let xv = taper_tensor::Var::from_tensor(&x).unwrap();
        let y = taper_nn::activation::relu(xv.as_tensor()).unwrap();
        let yv: Vec<f64> = y.to_dtype(DType::F64).unwrap().to_vec1().unwrap();
        assert_eq!(&yv[..5], &[0.0, 0.0, 0.0, 0.25, 3.0], "{dt:?}");
        assert!(yv[5].is_nan(), "{dt:?}: NaN propagates");
        let w = Tensor::new(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 0.0], &Device::Cpu)
            .unwrap()
            .to_dtype(dt)
            .unwrap();
        // Σ w·relu(x) over the finite entries; the NaN entry's weight is 0 but 0·NaN is NaN,
        // so take the first five.
        let loss = y
            .narrow(0, 0, 5)
            .unwrap()
            .mul(&w.narrow(0, 0, 5).unwrap())
            .unwrap();
        let grads = loss.sum_all().unwrap().backward().unwrap();
        let g: Vec<f64> = grads
            .get(xv.as_tensor())
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(&g[..5], &[0.0, 0.0, 0.0, 4.0, 5.0], "{dt:?}");
    }
}
