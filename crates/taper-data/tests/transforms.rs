//! Preprocessing and augmentation values.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use taper_data::transforms::*;
use taper_tensor::{DType, Device, Tensor};

fn rng() -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(0)
}

fn image(h: usize, w: usize) -> Tensor {
    Tensor::arange(0f32, (h * w) as f32, &Device::Cpu)
        .unwrap()
        .reshape((1, 1, h, w))
        .unwrap()
}

#[test]
fn normalization_with_given_and_fitted_statistics() {
    let x = Tensor::new(&[[1f32, 3.], [5., 7.]], &Device::Cpu).unwrap();
    let y = Tensor::zeros(2, DType::U32, &Device::Cpu).unwrap();
    let n = Normalize::fit(&x).unwrap();
    assert_eq!((n.mean, n.std), (4.0, 5f64.sqrt()));
    let (z, _) = n.apply(x, y, &mut rng()).unwrap();
    let v = z.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!((v.iter().sum::<f32>()).abs() < 1e-6);
    assert!(Normalize::new(0.0, 0.0).is_err());
}

#[test]
fn one_hot_encoding() {
    let t = one_hot(&Tensor::new(&[2u32, 0], &Device::Cpu).unwrap(), 3).unwrap();
    assert_eq!(t.to_vec2::<f32>().unwrap(), [[0., 0., 1.], [1., 0., 0.]]);
    let e = one_hot(&Tensor::new(&[3u32], &Device::Cpu).unwrap(), 3)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`labels`") && e.contains("3 at position 0"),
        "{e}"
    );
}

#[test]
fn translation_rotation_and_erasing() {
    let y = Tensor::zeros(1, DType::U32, &Device::Cpu).unwrap();
    let x = image(5, 5);
    // Zero ranges are the identity.
    let (a, _) = RandomTranslate { max_shift: 0 }
        .apply(x.clone(), y.clone(), &mut rng())
        .unwrap();
    let (b, _) = RandomRotation { max_degrees: 0.0 }
        .apply(x.clone(), y.clone(), &mut rng())
        .unwrap();
    let (c, _) = RandomErasing {
        p: 0.0,
        ..Default::default()
    }
    .apply(x.clone(), y.clone(), &mut rng())
    .unwrap();
    for t in [&a, &b, &c] {
        assert_eq!(
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            x.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
    // A shifted image keeps its values, moved, with zeros filling in.
    let (s, _) = RandomTranslate { max_shift: 2 }
        .apply(x.clone(), y.clone(), &mut ChaCha8Rng::seed_from_u64(5))
        .unwrap();
    let sv = s.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(sv.iter().all(|v| *v == 0.0 || (*v as usize) < 25));
    // A rotation by up to 180° of a centred symmetric blob preserves its mass roughly.
    let mut blob = vec![0f32; 81];
    for r in 3..6 {
        for c in 3..6 {
            blob[r * 9 + c] = 1.0;
        }
    }
    let bt = Tensor::from_vec(blob, (1, 9, 9), &Device::Cpu).unwrap();
    let (rt, _) = RandomRotation { max_degrees: 180.0 }
        .apply(bt, y.clone(), &mut rng())
        .unwrap();
    let mass = rt.sum_all().unwrap().to_scalar::<f32>().unwrap();
    assert!((mass - 9.0).abs() < 2.5, "{mass}");
    // Erasing with p = 1 zeroes a rectangle of 2–33% of the area.
    let ones = Tensor::ones((1, 1, 20, 20), DType::F32, &Device::Cpu).unwrap();
    let (e, _) = RandomErasing {
        p: 1.0,
        ..Default::default()
    }
    .apply(ones, y, &mut rng())
    .unwrap();
    let zeros = e
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .filter(|v| **v == 0.0)
        .count();
    assert!((4..=140).contains(&zeros), "{zeros}");
    let e = RandomTranslate { max_shift: 1 }.apply(
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
        &mut rng(),
    );
    assert!(e.is_err(), "images need (N, H, W) or (N, C, H, W)");
}

#[test]
fn the_documents_regression_data() {
    let d = taper_data::linear_regression(2000, 7).unwrap();
    let x = d.inputs().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let y = d.targets().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(x.iter().all(|v| (0.0..1.0).contains(v)));
    let resid: Vec<f32> = x.iter().zip(&y).map(|(x, y)| y - (2.0 * x + 1.0)).collect();
    let mean = resid.iter().sum::<f32>() / 2000.0;
    let std = (resid.iter().map(|r| (r - mean).powi(2)).sum::<f32>() / 2000.0).sqrt();
    assert!(
        mean.abs() < 0.01 && (std - 0.1).abs() < 0.01,
        "noise mean {mean}, std {std}"
    );
    assert_eq!(
        taper_data::linear_regression(5, 7)
            .unwrap()
            .targets()
            .to_vec2::<f32>()
            .unwrap(),
        taper_data::linear_regression(5, 7)
            .unwrap()
            .targets()
            .to_vec2::<f32>()
            .unwrap()
    );
}
