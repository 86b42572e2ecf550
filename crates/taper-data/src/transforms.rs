//! Per-batch preprocessing and augmentation, seeded: normalization, one-hot targets,
//! random translation, small rotation and random erasing.
//!
//! A [`BatchTransform`] receives the loader's per-batch generator, so augmentation is
//! reproducible for a given seed, epoch and batch. Image transforms take inputs whose last
//! two dimensions are (H, W): (N, H, W) or (N, C, H, W); they run on the CPU.

use std::fmt::Debug;

use candle_core::{DType, Device, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::error::invalid;
use crate::Result;

/// A transformation of a whole batch.
pub trait BatchTransform: Send + Sync + Debug {
    /// Transforms (inputs, targets), drawing any randomness from `rng`.
    fn apply(
        &self,
        inputs: Tensor,
        targets: Tensor,
        rng: &mut ChaCha8Rng,
    ) -> Result<(Tensor, Tensor)>;
}

/// Several transforms, applied in order.
#[derive(Debug, Default)]
pub struct Compose(pub Vec<Box<dyn BatchTransform>>);

impl BatchTransform for Compose {
    fn apply(
        &self,
        mut x: Tensor,
        mut y: Tensor,
        rng: &mut ChaCha8Rng,
    ) -> Result<(Tensor, Tensor)> {
        for t in &self.0 {
            (x, y) = t.apply(x, y, rng)?;
        }
        Ok((x, y))
    }
}

/// (x − mean) / std on the inputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalize {
    /// The mean subtracted.
    pub mean: f64,
    /// The standard deviation divided by.
    pub std: f64,
}

impl Normalize {
    /// Given statistics (MNIST's are 0.1307 and 0.3081); `std` must be positive.
    pub fn new(mean: f64, std: f64) -> Result<Self> {
        if !(std > 0.0) || !mean.is_finite() {
            return Err(invalid("std", std, "a positive std and a finite mean"));
        }
        Ok(Self { mean, std })
    }

    /// Statistics computed over every element of `data` (e.g. the training inputs).
    pub fn fit(data: &Tensor) -> Result<Self> {
        let x = data.to_dtype(DType::F64)?.flatten_all()?;
        let mean = x.mean_all()?.to_scalar::<f64>()?;
        let std = x
            .affine(1.0, -mean)?
            .sqr()?
            .mean_all()?
            .to_scalar::<f64>()?
            .sqrt();
        Self::new(mean, std)
    }
}

impl BatchTransform for Normalize {
    fn apply(&self, x: Tensor, y: Tensor, _: &mut ChaCha8Rng) -> Result<(Tensor, Tensor)> {
        Ok((x.affine(1.0 / self.std, -self.mean / self.std)?, y))
    }
}

/// Integer class targets (N) to one-hot float rows (N, classes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OneHot {
    /// Number of classes.
    pub classes: usize,
}

/// One-hot encodes integer labels (any integer dtype) as f32 (N, classes).
pub fn one_hot(labels: &Tensor, classes: usize) -> Result<Tensor> {
    let ids: Vec<i64> = labels.flatten_all()?.to_dtype(DType::I64)?.to_vec1()?;
    let mut out = vec![0f32; ids.len() * classes];
    for (i, &c) in ids.iter().enumerate() {
        if c < 0 || c as usize >= classes {
            return Err(invalid(
                "labels",
                format!("{c} at position {i}"),
                "labels in [0, classes)",
            ));
        }
        out[i * classes + c as usize] = 1.0;
    }
    Ok(Tensor::from_vec(
        out,
        (ids.len(), classes),
        labels.device(),
    )?)
}

impl BatchTransform for OneHot {
    fn apply(&self, x: Tensor, y: Tensor, _: &mut ChaCha8Rng) -> Result<(Tensor, Tensor)> {
        Ok((x, one_hot(&y, self.classes)?))
    }
}

/// Runs `f` on each (H, W) image of `x` as a mutable f32 slice, on the CPU.
fn per_image(x: &Tensor, mut f: impl FnMut(&mut [f32], usize, usize)) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    if dims.len() < 3 {
        return Err(invalid(
            "inputs",
            format!("{dims:?}"),
            "images shaped (N, H, W) or (N, C, H, W)",
        ));
    }
    let (h, w) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    let (device, dtype) = (x.device().clone(), x.dtype());
    let mut data: Vec<f32> = x
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    if h * w > 0 {
        for img in data.chunks_exact_mut(h * w) {
            f(img, h, w);
        }
    }
    Ok(Tensor::from_vec(data, dims, &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(&device)?)
}

/// Shifts each image by up to `max_shift` pixels in each direction, filling with zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RandomTranslate {
    /// Largest shift, in pixels.
    pub max_shift: usize,
}

impl BatchTransform for RandomTranslate {
    fn apply(&self, x: Tensor, y: Tensor, rng: &mut ChaCha8Rng) -> Result<(Tensor, Tensor)> {
        let m = self.max_shift as i64;
        let out = per_image(&x, |img, h, w| {
            let (dy, dx) = (rng.random_range(-m..=m), rng.random_range(-m..=m));
            let src = img.to_vec();
            for r in 0..h as i64 {
                for c in 0..w as i64 {
                    let (sr, sc) = (r - dy, c - dx);
                    let inside = (0..h as i64).contains(&sr) && (0..w as i64).contains(&sc);
                    img[(r * w as i64 + c) as usize] = if inside {
                        src[(sr * w as i64 + sc) as usize]
                    } else {
                        0.0
                    };
                }
            }
        })?;
        Ok((out, y))
    }
}

/// Rotates each image by an angle drawn from U(−max_degrees, max_degrees) about its
/// centre, with bilinear sampling and zero fill.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomRotation {
    /// Largest rotation, in degrees.
    pub max_degrees: f64,
}

impl BatchTransform for RandomRotation {
    fn apply(&self, x: Tensor, y: Tensor, rng: &mut ChaCha8Rng) -> Result<(Tensor, Tensor)> {
        let d = self.max_degrees.abs();
        let out = per_image(&x, |img, h, w| {
            let a = rng.random_range(-d..=d).to_radians();
            let (s, c) = a.sin_cos();
            let (cy, cx) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
            let src = img.to_vec();
            let at = |r: i64, col: i64| -> f64 {
                if (0..h as i64).contains(&r) && (0..w as i64).contains(&col) {
                    src[r as usize * w + col as usize] as f64
                } else {
                    0.0
                }
            };
            for r in 0..h {
                for col in 0..w {
                    // Inverse rotation: where does this output pixel come from?
                    let (yr, xr) = (r as f64 - cy, col as f64 - cx);
                    let (sy, sx) = (c * yr - s * xr + cy, s * yr + c * xr + cx);
                    let (y0, x0) = (sy.floor(), sx.floor());
                    let (fy, fx) = (sy - y0, sx - x0);
                    let (y0, x0) = (y0 as i64, x0 as i64);
                    let v = at(y0, x0) * (1.0 - fy) * (1.0 - fx)
                        + at(y0, x0 + 1) * (1.0 - fy) * fx
                        + at(y0 + 1, x0) * fy * (1.0 - fx)
                        + at(y0 + 1, x0 + 1) * fy * fx;
                    img[r * w + col] = v as f32;
                }
            }
        })?;
        Ok((out, y))
    }
}

/// Random erasing (Zhong et al. 2020, torchvision's `RandomErasing`): with probability `p`,
/// a rectangle of `scale` of the area and aspect ratio in `ratio` is set to `value`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomErasing {
    /// Probability per image (torchvision's default 0.5).
    pub p: f64,
    /// Range of the erased fraction of the area (default 0.02–0.33).
    pub scale: (f64, f64),
    /// Range of aspect ratios (default 0.3–3.3).
    pub ratio: (f64, f64),
    /// Fill value (default 0).
    pub value: f32,
}

impl Default for RandomErasing {
    fn default() -> Self {
        Self {
            p: 0.5,
            scale: (0.02, 0.33),
            ratio: (0.3, 3.3),
            value: 0.0,
        }
    }
}

impl BatchTransform for RandomErasing {
    fn apply(&self, x: Tensor, y: Tensor, rng: &mut ChaCha8Rng) -> Result<(Tensor, Tensor)> {
        if !(0.0..=1.0).contains(&self.p) {
            return Err(invalid("p", self.p, "a probability in [0, 1]"));
        }
        let out = per_image(&x, |img, h, w| {
            if rng.random::<f64>() >= self.p {
                return;
            }
            let area = (h * w) as f64;
            let (lr0, lr1) = (self.ratio.0.ln(), self.ratio.1.ln());
            for _ in 0..10 {
                let target = area * rng.random_range(self.scale.0..=self.scale.1);
                let aspect = rng.random_range(lr0..=lr1).exp();
                let eh = (target * aspect).sqrt().round() as usize;
                let ew = (target / aspect).sqrt().round() as usize;
                if eh == 0 || ew == 0 || eh >= h || ew >= w {
                    continue;
                }
                let (top, left) = (rng.random_range(0..=h - eh), rng.random_range(0..=w - ew));
                for r in top..top + eh {
                    img[r * w + left..r * w + left + ew].fill(self.value);
                }
                return;
            }
        })?;
        Ok((out, y))
    }
}
