//! Metrics: accuracy from logits, the per-batch [`Metric`]s `Fit` reports, a running mean,
//! and a confusion matrix.

use candle_core::{DType, Tensor, D};

use crate::error::{Error, Result};

/// A metric computed on every batch and averaged over the epoch (weighted by batch size),
/// for training and validation data alike, as Keras's `metrics=[...]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Keras's `"accuracy"`: the fraction of rows whose largest logit is the target class.
    Accuracy,
    /// Keras's `"mae"`: the mean absolute difference between output and target.
    MeanAbsoluteError,
}

impl Metric {
    /// Its name in the history and logs (`accuracy`, `mae`; `val_` prefixed for validation).
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::MeanAbsoluteError => "mae",
        }
    }

    /// The metric of one batch's `output` against its `targets`.
    pub fn value(self, output: &Tensor, targets: &Tensor) -> Result<f64> {
        match self {
            Metric::Accuracy => accuracy(output, targets),
            Metric::MeanAbsoluteError => Ok(output
                .to_dtype(DType::F64)?
                .sub(&targets.to_dtype(DType::F64)?.reshape(output.shape())?)?
                .abs()?
                .mean_all()?
                .to_scalar::<f64>()?),
        }
    }
}

/// Predicted classes: the argmax of logits (N, C) along the class dimension.
pub fn predictions(logits: &Tensor) -> Result<Vec<u32>> {
    Ok(logits.argmax(D::Minus1)?.to_dtype(DType::U32)?.to_vec1()?)
}

/// The fraction of rows of `logits` (N, C) whose argmax equals `targets` (N).
///
/// ```
/// use taper_tensor::{Tensor, Device};
/// let logits = Tensor::new(&[[0.1f32, 2.0], [3.0, 0.0], [0.0, 1.0]], &Device::Cpu)?;
/// let y = Tensor::new(&[1u32, 0, 0], &Device::Cpu)?;
/// assert_eq!(taper_train::accuracy(&logits, &y)?, 2.0 / 3.0);
/// # Ok::<(), taper_train::Error>(())
/// ```
pub fn accuracy(logits: &Tensor, targets: &Tensor) -> Result<f64> {
    let (pred, truth) = (predictions(logits)?, labels(targets)?);
    if pred.len() != truth.len() {
        return Err(Error::InvalidValue {
            field: "targets",
            value: format!("{} targets for {} rows of logits", truth.len(), pred.len()),
            expected: "one target per row",
        });
    }
    let right = pred.iter().zip(&truth).filter(|(p, t)| p == t).count();
    Ok(if pred.is_empty() {
        0.0
    } else {
        right as f64 / pred.len() as f64
    })
}

fn labels(targets: &Tensor) -> Result<Vec<u32>> {
    Ok(targets.flatten_all()?.to_dtype(DType::U32)?.to_vec1()?)
}

/// A mean accumulated batch by batch, weighted by batch size.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunningMean {
    sum: f64,
    count: f64,
}

impl RunningMean {
    /// Adds a batch whose mean is `value` over `n` examples.
    pub fn add(&mut self, value: f64, n: usize) {
        self.sum += value * n as f64;
        self.count += n as f64;
    }

    /// The mean so far (0 before any value).
    pub fn mean(&self) -> f64 {
        if self.count == 0.0 {
            0.0
        } else {
            self.sum / self.count
        }
    }

    /// Examples counted.
    pub fn count(&self) -> usize {
        self.count as usize
    }

    /// Starts over.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// Counts of (true class, predicted class).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfusionMatrix {
    classes: usize,
    counts: Vec<u64>,
}

impl ConfusionMatrix {
    /// An empty matrix over `classes` classes.
    pub fn new(classes: usize) -> Self {
        Self {
            classes,
            counts: vec![0; classes * classes],
        }
    }

    /// Adds a batch of logits (N, C) and targets (N).
    pub fn update(&mut self, logits: &Tensor, targets: &Tensor) -> Result<()> {
        for (p, t) in predictions(logits)?.into_iter().zip(labels(targets)?) {
            let (p, t) = (p as usize, t as usize);
            if p >= self.classes || t >= self.classes {
                return Err(Error::InvalidValue {
                    field: "targets",
                    value: format!("class {}", p.max(t)),
                    expected: "classes below the matrix size",
                });
            }
            self.counts[t * self.classes + p] += 1;
        }
        Ok(())
    }

    /// How many examples of class `truth` were predicted as `predicted`.
    pub fn get(&self, truth: usize, predicted: usize) -> u64 {
        self.counts[truth * self.classes + predicted]
    }

    /// Overall accuracy.
    pub fn accuracy(&self) -> f64 {
        let total: u64 = self.counts.iter().sum();
        let right: u64 = (0..self.classes).map(|c| self.get(c, c)).sum();
        if total == 0 {
            0.0
        } else {
            right as f64 / total as f64
        }
    }

    /// Recall of each class (its diagonal over its row).
    pub fn recall(&self) -> Vec<f64> {
        (0..self.classes)
            .map(|c| {
                let row: u64 = (0..self.classes).map(|p| self.get(c, p)).sum();
                if row == 0 {
                    0.0
                } else {
                    self.get(c, c) as f64 / row as f64
                }
            })
            .collect()
    }
}

impl std::fmt::Display for ConfusionMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "true\\pred")?;
        for p in 0..self.classes {
            write!(f, "{p:>6}")?;
        }
        writeln!(f)?;
        for t in 0..self.classes {
            write!(f, "{t:>9}")?;
            for p in 0..self.classes {
                write!(f, "{:>6}", self.get(t, p))?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}
