//! Progress reporting: an indicatif bar with loss, accuracy and samples/s, silent when
//! stdout is not a terminal (logs and CI stay clean).

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar over the batches of an epoch.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    start: Instant,
    samples: u64,
}

impl Progress {
    /// A bar of `len` batches labelled `label`; hidden unless stdout is a terminal.
    pub fn new(len: u64, label: &str) -> Self {
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
        let style = ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(label.to_string());
        Self {
            bar,
            start: Instant::now(),
            samples: 0,
        }
        .visible(std::io::stdout().is_terminal())
    }

    /// Builder: draw the bar on stdout, or keep it hidden (default: drawn only when stdout
    /// is a terminal).
    pub fn visible(self, visible: bool) -> Self {
        self.bar.set_draw_target(if visible {
            ProgressDrawTarget::stdout()
        } else {
            ProgressDrawTarget::hidden()
        });
        self
    }

    /// Records a batch of `samples` examples with the running loss and accuracy.
    pub fn update(&mut self, samples: u64, loss: f64, accuracy: f64) {
        self.samples += samples;
        self.bar.set_message(format!(
            "loss {loss:.4}  acc {:.2}%  {:.0} samples/s",
            100.0 * accuracy,
            self.samples_per_sec()
        ));
        self.bar.inc(1);
    }

    /// Throughput since the bar started.
    pub fn samples_per_sec(&self) -> f64 {
        self.samples as f64 / self.start.elapsed().as_secs_f64().max(1e-9)
    }

    /// Samples counted so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Whether the bar draws anything.
    pub fn is_visible(&self) -> bool {
        !self.bar.is_hidden()
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
