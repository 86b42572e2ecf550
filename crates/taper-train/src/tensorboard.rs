//! `SummaryWriter`: TensorBoard event files, as PyTorch's
//! `torch.utils.tensorboard.SummaryWriter` writes them, so `tensorboard --logdir runs`
//! shows Taper runs beside PyTorch's.
//!
//! The messages are the generated protobuf types of the `tensorboard-proto` crate,
//! serialized by the `protobuf` crate; the only code here is what those crates leave out:
//! the TFRecord framing (length, masked CRC-32C from the `crc32c` crate) and PyTorch's
//! histogram buckets. (The `tensorboard-rs` crate on top of them panics on I/O errors,
//! writes from a detached thread and has no hyperparameters, so it is not used.)
//!
//! What each call writes, and how TensorBoard's reader (`EventAccumulator`) sees it:
//! - [`SummaryWriter::add_scalar`]: a scalar (`Scalars(tag)`), as `simple_value`.
//! - [`SummaryWriter::add_histogram`]: a histogram (`Histograms(tag)`) with PyTorch's
//!   exponential buckets (±1e-12·1.1ᵏ), empty ones at the ends dropped as PyTorch does.
//! - [`SummaryWriter::add_hparams`]: the hyperparameters plugin's experiment, session start
//!   and session end records, so the run shows in TensorBoard's HPARAMS tab.
//!
//! A kill can cut the last record short; TensorBoard's reader stops at a truncated record
//! and keeps everything before it, so at most the events since the last
//! [`SummaryWriter::flush`] are lost.
//!
//! ```
//! use taper_train::SummaryWriter;
//! let dir = std::env::temp_dir().join(format!("taper-tb-doc-{}", std::process::id()));
//! let mut tb = SummaryWriter::new(&dir)?;
//! for step in 1..=3u64 {
//!     tb.add_scalar("loss/train", 1.0 / step as f64, step)?;
//! }
//! tb.add_histogram("weights/fc", &[0.1, -0.2, 0.3], 3)?;
//! tb.flush()?;
//! assert!(tb.path().file_name().unwrap().to_string_lossy().starts_with("events.out.tfevents."));
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), taper_train::Error>(())
//! ```

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use protobuf::well_known_types::{Value, Value_oneof_kind};
use protobuf::{Message, RepeatedField};
use tensorboard_proto::api::{DataType, Experiment, HParamInfo, MetricInfo, MetricName, Status};
use tensorboard_proto::event::Event;
use tensorboard_proto::plugin_hparams::{HParamsPluginData, SessionEndInfo, SessionStartInfo};
use tensorboard_proto::summary::{
    HistogramProto, Summary, SummaryMetadata, SummaryMetadata_PluginData, Summary_Value,
};

use crate::{Error, Result};

/// A hyperparameter's value, for [`SummaryWriter::add_hparams`].
#[derive(Debug, Clone, PartialEq)]
pub enum HParam {
    /// A number (learning rate, batch size).
    Number(f64),
    /// A string (optimizer, schedule).
    Text(String),
    /// A flag.
    Bool(bool),
}

impl From<f64> for HParam {
    fn from(v: f64) -> Self {
        HParam::Number(v)
    }
}

impl From<&str> for HParam {
    fn from(v: &str) -> Self {
        HParam::Text(v.to_string())
    }
}

impl From<bool> for HParam {
    fn from(v: bool) -> Self {
        HParam::Bool(v)
    }
}

/// Writes one TensorBoard event file in a log directory.
#[derive(Debug)]
pub struct SummaryWriter {
    file: BufWriter<File>,
    path: PathBuf,
}

impl SummaryWriter {
    /// Creates `logdir` if needed and a new event file in it, named as PyTorch names them
    /// (`events.out.tfevents.{seconds}.{host}.{pid}.{n}`), starting with the file-version
    /// record.
    pub fn new(logdir: impl AsRef<Path>) -> Result<Self> {
        let logdir = logdir.as_ref();
        std::fs::create_dir_all(logdir).map_err(|e| io_err(logdir, e))?;
        static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!(
            "events.out.tfevents.{}.{}.{}.{n}",
            now().floor() as u64,
            hostname(),
            std::process::id()
        );
        let path = logdir.join(name);
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        let mut w = Self {
            file: BufWriter::new(file),
            path,
        };
        let mut event = Event::new();
        event.set_wall_time(now());
        event.set_file_version("brain.Event:2".into());
        w.write_event(&event)?;
        w.flush()?;
        Ok(w)
    }

    /// The event file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records `value` under `tag` at `step` (stored as f32, as TensorBoard's scalars are).
    /// A non-finite value is recorded as it is (TensorBoard shows NaN and ∞).
    pub fn add_scalar(&mut self, tag: &str, value: f64, step: u64) -> Result<()> {
        let mut v = Summary_Value::new();
        v.set_tag(tag.into());
        v.set_simple_value(value as f32);
        self.write_summary(vec![v], step)
    }

    /// Records one optimizer step as `Fit` and the `mnist` example log it: `loss/train`,
    /// `time/step_ms`, each group's `lr/group{g}` and, where it has one, `momentum/group{g}`,
    /// and `grad_norm` when the step measured it.
    pub fn add_step_scalars(
        &mut self,
        opt: &dyn taper_optim::AnyOptimizer,
        loss: f64,
        step_ms: f64,
        grad_norm: Option<f64>,
        step: u64,
    ) -> Result<()> {
        self.add_scalar("loss/train", loss, step)?;
        self.add_scalar("time/step_ms", step_ms, step)?;
        for g in 0..opt.group_count() {
            self.add_scalar(
                &format!("lr/group{g}"),
                opt.group_lr(g).unwrap_or(0.0),
                step,
            )?;
            if let Some(m) = opt.group_momentum(g) {
                self.add_scalar(&format!("momentum/group{g}"), m, step)?;
            }
        }
        if let Some(n) = grad_norm {
            self.add_scalar("grad_norm", n, step)?;
        }
        Ok(())
    }

    /// Records the distribution of `values` under `tag` at `step`. Non-finite values are an
    /// error naming the tag (a histogram of NaN has no buckets; log the count as a scalar).
    pub fn add_histogram(&mut self, tag: &str, values: &[f64], step: u64) -> Result<()> {
        let histo = histogram(tag, values)?;
        let mut v = Summary_Value::new();
        v.set_tag(tag.into());
        v.set_histo(histo);
        self.write_summary(vec![v], step)
    }

    /// Records the run's hyperparameters and the metric tags to show beside them in the
    /// HPARAMS tab, as PyTorch's `add_hparams` does (experiment, session start and a
    /// successful session end). Write the metrics themselves with [`Self::add_scalar`].
    pub fn add_hparams(&mut self, hparams: &[(&str, HParam)], metrics: &[&str]) -> Result<()> {
        let mut experiment = Experiment::new();
        let mut start = SessionStartInfo::new();
        for (name, value) in hparams {
            let mut info = HParamInfo::new();
            info.set_name(name.to_string());
            let mut v = Value::new();
            match value {
                HParam::Number(x) => {
                    info.set_field_type(DataType::DATA_TYPE_FLOAT64);
                    v.kind = Some(Value_oneof_kind::number_value(*x));
                }
                HParam::Text(s) => {
                    info.set_field_type(DataType::DATA_TYPE_STRING);
                    v.kind = Some(Value_oneof_kind::string_value(s.clone()));
                }
                HParam::Bool(b) => {
                    info.set_field_type(DataType::DATA_TYPE_BOOL);
                    v.kind = Some(Value_oneof_kind::bool_value(*b));
                }
            }
            experiment.mut_hparam_infos().push(info);
            start.mut_hparams().insert(name.to_string(), v);
        }
        for tag in metrics {
            let mut name = MetricName::new();
            name.set_tag(tag.to_string());
            let mut info = MetricInfo::new();
            info.set_name(name);
            experiment.mut_metric_infos().push(info);
        }
        start.set_start_time_secs(now());
        let mut end = SessionEndInfo::new();
        end.set_status(Status::STATUS_SUCCESS);
        end.set_end_time_secs(now());

        let mut exp = HParamsPluginData::new();
        exp.set_experiment(experiment);
        let mut ssi = HParamsPluginData::new();
        ssi.set_session_start_info(start);
        let mut sei = HParamsPluginData::new();
        sei.set_session_end_info(end);
        for (tag, data) in [
            ("_hparams_/experiment", exp),
            ("_hparams_/session_start_info", ssi),
            ("_hparams_/session_end_info", sei),
        ] {
            let content = data.write_to_bytes().map_err(|e| self.proto_err(e))?;
            let mut plugin = SummaryMetadata_PluginData::new();
            plugin.set_plugin_name("hparams".into());
            plugin.set_content(content);
            let mut meta = SummaryMetadata::new();
            meta.set_plugin_data(plugin);
            let mut v = Summary_Value::new();
            v.set_tag(tag.into());
            v.set_metadata(meta);
            self.write_summary(vec![v], 0)?;
        }
        Ok(())
    }

    /// Writes buffered events to the file and syncs it to disk.
    pub fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(|e| io_err(&self.path, e))?;
        self.file
            .get_ref()
            .sync_data()
            .map_err(|e| io_err(&self.path, e))
    }

    fn write_summary(&mut self, values: Vec<Summary_Value>, step: u64) -> Result<()> {
        let mut summary = Summary::new();
        summary.set_value(RepeatedField::from_vec(values));
        let mut event = Event::new();
        event.set_wall_time(now());
        event.set_step(step.min(i64::MAX as u64) as i64);
        event.set_summary(summary);
        self.write_event(&event)
    }

    /// One TFRecord: length, its masked CRC-32C, the serialized event, its masked CRC-32C.
    fn write_event(&mut self, event: &Event) -> Result<()> {
        let data = event.write_to_bytes().map_err(|e| self.proto_err(e))?;
        let len = (data.len() as u64).to_le_bytes();
        let mut record = Vec::with_capacity(data.len() + 16);
        record.extend_from_slice(&len);
        record.extend_from_slice(&masked_crc(&len).to_le_bytes());
        record.extend_from_slice(&data);
        record.extend_from_slice(&masked_crc(&data).to_le_bytes());
        self.file
            .write_all(&record)
            .map_err(|e| io_err(&self.path, e))
    }

    fn proto_err(&self, e: protobuf::ProtobufError) -> Error {
        Error::Log {
            path: self.path.display().to_string(),
            reason: format!("encoding an event: {e}"),
        }
    }
}

impl Drop for SummaryWriter {
    fn drop(&mut self) {
        // Best effort: an error here has nowhere to go; call `flush` to see it.
        let _ = self.file.flush();
    }
}

/// TFRecord's masked CRC-32C.
fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// PyTorch's (and TensorFlow's) default histogram bucket limits: ±1e-12·1.1ᵏ up to 1e20,
/// with 0 between and ±f64::MAX at the ends.
fn default_buckets() -> &'static [f64] {
    static LIMITS: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    LIMITS.get_or_init(|| {
        let mut pos = Vec::new();
        let mut v = 1e-12;
        while v < 1e20 {
            pos.push(v);
            v *= 1.1;
        }
        pos.push(f64::MAX);
        let mut all: Vec<f64> = pos.iter().rev().map(|x| -x).collect();
        all.push(0.0);
        all.extend(pos);
        all
    })
}

/// Counts `values` into the default buckets (bucket i holds limit[i−1] < x ≤ limit[i]),
/// then drops the empty buckets before the first and after the last non-empty one.
fn histogram(tag: &str, values: &[f64]) -> Result<HistogramProto> {
    if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
        return Err(Error::InvalidValue {
            field: "histogram values",
            value: format!("{bad} in `{tag}`"),
            expected: "finite values",
        });
    }
    let limits = default_buckets();
    let mut counts = vec![0.0f64; limits.len()];
    let (mut min, mut max, mut sum, mut sum_sq) = (f64::INFINITY, f64::NEG_INFINITY, 0.0, 0.0);
    for &x in values {
        counts[limits.partition_point(|&l| l < x)] += 1.0;
        min = min.min(x);
        max = max.max(x);
        sum += x;
        sum_sq += x * x;
    }
    let mut h = HistogramProto::new();
    if values.is_empty() {
        (min, max) = (0.0, 0.0);
    }
    h.set_min(min);
    h.set_max(max);
    h.set_num(values.len() as f64);
    h.set_sum(sum);
    h.set_sum_squares(sum_sq);
    let first = counts.iter().position(|&c| c > 0.0).unwrap_or(0);
    let last = counts.iter().rposition(|&c| c > 0.0).unwrap_or(0);
    h.set_bucket_limit(limits[first..=last].to_vec());
    h.set_bucket(counts[first..=last].to_vec());
    Ok(h)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The machine's name, for the file name (`localhost` when it cannot be read).
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    if rc != 0 || name.is_empty() || name.contains(['/', '\\']) {
        "localhost".into()
    } else {
        name
    }
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Log {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_crc_matches_tensorflow() {
        // TensorFlow's crc32c_test: the CRC-32C of "a" is 0xc1d04330; masking rotates right
        // by 15 and adds 0xa282ead8.
        assert_eq!(crc32c::crc32c(b"a"), 0xc1d0_4330);
        assert_eq!(
            masked_crc(b"a"),
            0xc1d0_4330u32.rotate_right(15).wrapping_add(0xa282_ead8)
        );
    }

    #[test]
    fn histograms_count_every_value_into_its_bucket() {
        let v = [-2.0, 0.0, 0.5, 0.5, 3.0];
        let h = histogram("t", &v).unwrap();
        assert_eq!(h.get_num(), 5.0);
        assert_eq!(h.get_bucket().iter().sum::<f64>(), 5.0);
        assert_eq!((h.get_min(), h.get_max()), (-2.0, 3.0));
        for (&x, _) in v.iter().zip(0..) {
            let i = h.get_bucket_limit().partition_point(|&l| l < x);
            assert!(h.get_bucket()[i] >= 1.0, "{x}");
        }
        assert!(histogram("w", &[1.0, f64::NAN])
            .unwrap_err()
            .to_string()
            .contains("NaN in `w`"));
    }
}
