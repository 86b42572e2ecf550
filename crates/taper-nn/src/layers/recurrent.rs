//! Recurrent layers: PyTorch's `nn.RNN` (tanh or ReLU), `nn.LSTM` and `nn.GRU`, with
//! `num_layers`, `bias`, `batch_first`, `dropout` between layers and `bidirectional`, their
//! parameter names (`weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`, `…_reverse`),
//! gate orders (LSTM: input, forget, cell, output; GRU: reset, update, new, with the reset
//! gate applied to `W_hn·h + b_hn` as PyTorch does), initialization U(±1/√hidden) and
//! initial and final states.
//!
//! The input projection of every time step is one matrix product per layer and direction;
//! the recurrence then runs step by step with candle's ops (one product per step).

use candle_core::{Result, Tensor};
use taper_tensor::{tracked, ModuleT, ParamStore};

use crate::error::{Error, Result as NnResult};
use crate::init::Init;
use crate::layers::dropout::dropout;

/// The nonlinearity of a plain [`Rnn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum RnnNonlinearity {
    /// tanh (PyTorch's default).
    #[default]
    Tanh,
    /// ReLU.
    Relu,
}

/// Which recurrence a layer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RecurrentKind {
    /// `nn.RNN`: h ← f(W_ih·x + b_ih + W_hh·h + b_hh).
    Rnn(RnnNonlinearity),
    /// `nn.LSTM`.
    Lstm,
    /// `nn.GRU`.
    Gru,
}

impl RecurrentKind {
    /// Gates per hidden unit: the rows of the weights are `gates × hidden`.
    fn gates(self) -> usize {
        match self {
            RecurrentKind::Rnn(_) => 1,
            RecurrentKind::Lstm => 4,
            RecurrentKind::Gru => 3,
        }
    }

    fn name(self) -> &'static str {
        match self {
            RecurrentKind::Rnn(_) => "RNN",
            RecurrentKind::Lstm => "LSTM",
            RecurrentKind::Gru => "GRU",
        }
    }
}

/// The configuration of a recurrent layer: `RecurrentConfig::new(input_size, hidden_size)`
/// with PyTorch's defaults (1 layer, biases, `batch_first = false`, no dropout, one
/// direction), each a builder of PyTorch's name; [`RecurrentConfig::rnn`],
/// [`RecurrentConfig::lstm`] and [`RecurrentConfig::gru`] build.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecurrentConfig {
    /// Input features.
    pub input_size: usize,
    /// Hidden features.
    pub hidden_size: usize,
    /// Stacked layers (default 1).
    pub num_layers: usize,
    /// Biases `bias_ih` and `bias_hh` (default true).
    pub bias: bool,
    /// (N, L, features) inputs and outputs instead of (L, N, features) (default false).
    pub batch_first: bool,
    /// Dropout on every layer's output but the last, in training (default 0).
    pub dropout: f64,
    /// A second direction, reading the sequence backwards (default false).
    pub bidirectional: bool,
}

impl RecurrentConfig {
    /// A layer from `input_size` to `hidden_size` features.
    pub fn new(input_size: usize, hidden_size: usize) -> Self {
        Self {
            input_size,
            hidden_size,
            num_layers: 1,
            bias: true,
            batch_first: false,
            dropout: 0.0,
            bidirectional: false,
        }
    }

    /// Builder: stacked layers.
    pub fn num_layers(mut self, n: usize) -> Self {
        self.num_layers = n;
        self
    }

    /// Builder: biases.
    pub fn bias(mut self, on: bool) -> Self {
        self.bias = on;
        self
    }

    /// Builder: (N, L, features) inputs and outputs.
    pub fn batch_first(mut self, on: bool) -> Self {
        self.batch_first = on;
        self
    }

    /// Builder: dropout between layers.
    pub fn dropout(mut self, p: f64) -> Self {
        self.dropout = p;
        self
    }

    /// Builder: two directions.
    pub fn bidirectional(mut self, on: bool) -> Self {
        self.bidirectional = on;
        self
    }

    /// `nn.RNN` with `nonlinearity`.
    pub fn rnn(self, nonlinearity: RnnNonlinearity, store: &ParamStore) -> NnResult<Rnn> {
        Ok(Rnn(self.build(RecurrentKind::Rnn(nonlinearity), store)?))
    }

    /// `nn.LSTM`.
    pub fn lstm(self, store: &ParamStore) -> NnResult<Lstm> {
        Ok(Lstm(self.build(RecurrentKind::Lstm, store)?))
    }

    /// `nn.GRU`.
    pub fn gru(self, store: &ParamStore) -> NnResult<Gru> {
        Ok(Gru(self.build(RecurrentKind::Gru, store)?))
    }

    fn directions(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }

    /// Checks the configuration and registers every layer's and direction's weights.
    pub(crate) fn build(self, kind: RecurrentKind, store: &ParamStore) -> NnResult<Stack> {
        for (field, v) in [
            ("input_size", self.input_size),
            ("hidden_size", self.hidden_size),
            ("num_layers", self.num_layers),
        ] {
            crate::error::check(field, v as f64, v > 0, "a positive integer")?;
        }
        crate::error::check(
            "dropout",
            self.dropout,
            (0.0..=1.0).contains(&self.dropout),
            "a probability in [0, 1]",
        )?;
        let (h, g) = (self.hidden_size, kind.gates());
        let bound = 1.0 / (h as f64).sqrt();
        let init = Init::Uniform {
            low: -bound,
            high: bound,
        };
        let mut cells = Vec::new();
        for layer in 0..self.num_layers {
            let input = if layer == 0 {
                self.input_size
            } else {
                h * self.directions()
            };
            for dir in 0..self.directions() {
                let sfx = if dir == 1 { "_reverse" } else { "" };
                let p = |name: &str, shape: Vec<usize>| {
                    store.parameter(&format!("{name}_l{layer}{sfx}"), shape, init.init_fn())
                };
                let w_ih = p("weight_ih", vec![g * h, input])?;
                let w_hh = p("weight_hh", vec![g * h, h])?;
                let biases = if self.bias {
                    Some((p("bias_ih", vec![g * h])?, p("bias_hh", vec![g * h])?))
                } else {
                    None
                };
                cells.push(Cell { w_ih, w_hh, biases });
            }
        }
        Ok(Stack {
            config: self,
            kind,
            cells,
        })
    }
}

/// One layer and direction's weights.
#[derive(Debug, Clone)]
struct Cell {
    w_ih: Tensor,
    w_hh: Tensor,
    biases: Option<(Tensor, Tensor)>,
}

/// The layers and directions of one recurrent layer, and the recurrence they run.
#[derive(Debug, Clone)]
pub(crate) struct Stack {
    config: RecurrentConfig,
    kind: RecurrentKind,
    cells: Vec<Cell>,
}

impl Stack {
    fn name(&self) -> String {
        format!(
            "{}({}, {}, num_layers={}{})",
            self.kind.name(),
            self.config.input_size,
            self.config.hidden_size,
            self.config.num_layers,
            if self.config.bidirectional {
                ", bidirectional"
            } else {
                ""
            }
        )
    }

    /// The state's shape for a batch of `n` ((layers·directions, N, H), or without N
    /// unbatched).
    fn state_dims(&self, n: Option<usize>) -> Vec<usize> {
        let c = &self.config;
        let mut d = vec![c.num_layers * c.directions()];
        d.extend(n);
        d.push(c.hidden_size);
        d
    }

    /// Runs the layers over `x`: the output, the final hidden state and (LSTM) cell state.
    fn run(
        &self,
        x: &Tensor,
        h0: Option<&Tensor>,
        c0: Option<&Tensor>,
        train: bool,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let c = self.config;
        let unbatched = x.rank() == 2;
        if !(x.rank() == 3 || unbatched) || x.dims()[x.rank() - 1] != c.input_size {
            let layout = if c.batch_first { "(N, L, " } else { "(L, N, " };
            return Err(Error::shape(
                self.name(),
                format!(
                    "{layout}{}) or (L, {}) unbatched",
                    c.input_size, c.input_size
                ),
                x.dims(),
            )
            .into_candle());
        }
        // Time-major (L, N, features).
        let mut seq = if unbatched {
            x.unsqueeze(1)?
        } else if c.batch_first {
            x.transpose(0, 1)?.contiguous()?
        } else {
            x.clone()
        };
        let n = seq.dims()[1];
        let want = self.state_dims((!unbatched).then_some(n));
        let state = |s: Option<&Tensor>, what: &str| -> Result<Option<Tensor>> {
            match s {
                None => Ok(None),
                Some(t) if t.dims() == want.as_slice() => Ok(Some(if unbatched {
                    t.unsqueeze(1)?
                } else {
                    t.clone()
                })),
                Some(t) => Err(Error::shape(
                    format!("{} ({what})", self.name()),
                    format!("{want:?}"),
                    t.dims(),
                )
                .into_candle()),
            }
        };
        let (h0, c0) = (state(h0, "h0")?, state(c0, "c0")?);
        let (mut h_n, mut c_n) = (Vec::new(), Vec::new());
        let dirs = c.directions();
        for layer in 0..c.num_layers {
            let mut outs = Vec::with_capacity(dirs);
            for dir in 0..dirs {
                let i = layer * dirs + dir;
                let h = match &h0 {
                    Some(h) => h.get(i)?,
                    None => Tensor::zeros((n, c.hidden_size), seq.dtype(), seq.device())?,
                };
                let cs = match &c0 {
                    Some(cs) => cs.get(i)?,
                    None => Tensor::zeros((n, c.hidden_size), seq.dtype(), seq.device())?,
                };
                let (out, h, cs) = self.direction(&self.cells[i], &seq, h, cs, dir == 1)?;
                outs.push(out);
                h_n.push(h);
                c_n.push(cs);
            }
            seq = Tensor::cat(&outs, 2)?;
            if layer + 1 < c.num_layers {
                seq = dropout(&seq, c.dropout, train)?;
            }
        }
        let out = if unbatched {
            seq.squeeze(1)?
        } else if c.batch_first {
            seq.transpose(0, 1)?.contiguous()?
        } else {
            seq
        };
        let finish = |v: Vec<Tensor>| -> Result<Tensor> {
            let s = Tensor::stack(&v, 0)?;
            if unbatched {
                s.squeeze(1)
            } else {
                Ok(s)
            }
        };
        let h_n = finish(h_n)?;
        let c_n = match self.kind {
            RecurrentKind::Lstm => Some(finish(c_n)?),
            _ => None,
        };
        Ok((out, h_n, c_n))
    }

    /// One direction of one layer over the sequence (L, N, in): its outputs (L, N, H) in
    /// time order and its final states.
    fn direction(
        &self,
        cell: &Cell,
        seq: &Tensor,
        mut h: Tensor,
        mut c: Tensor,
        reverse: bool,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (l, n, input) = seq.dims3()?;
        let hid = self.config.hidden_size;
        let g = self.kind.gates() * hid;
        let w_ih = tracked(&cell.w_ih);
        let w_hh_t = tracked(&cell.w_hh).t()?;
        // Every step's input projection at once: (L·N, in)·W_ihᵀ + b_ih.
        let mut xp = seq.reshape((l * n, input))?.matmul(&w_ih.t()?)?;
        let b_hh = match &cell.biases {
            Some((b_ih, b_hh)) => {
                xp = xp.broadcast_add(&tracked(b_ih))?;
                Some(tracked(b_hh))
            }
            None => None,
        };
        let xp = xp.reshape((l, n, g))?;
        let mut outs = vec![None; l];
        for step in 0..l {
            let t = if reverse { l - 1 - step } else { step };
            let x_t = xp.get(t)?;
            let mut hh = h.matmul(&w_hh_t)?;
            if let Some(b) = &b_hh {
                hh = hh.broadcast_add(b)?;
            }
            let gate = |m: &Tensor, k: usize| m.narrow(1, k * hid, hid);
            match self.kind {
                RecurrentKind::Rnn(f) => {
                    let z = (x_t + hh)?;
                    h = match f {
                        RnnNonlinearity::Tanh => z.tanh()?,
                        RnnNonlinearity::Relu => crate::layers::activation::relu(&z)?,
                    };
                }
                RecurrentKind::Lstm => {
                    let z = (x_t + hh)?;
                    let sig = |k| crate::layers::activation::sigmoid(&gate(&z, k)?);
                    let (i, f, o) = (sig(0)?, sig(1)?, sig(3)?);
                    let cand = gate(&z, 2)?.tanh()?;
                    c = ((f * &c)? + (i * cand)?)?;
                    h = (o * c.tanh()?)?;
                }
                RecurrentKind::Gru => {
                    let sig =
                        |k| crate::layers::activation::sigmoid(&(gate(&x_t, k)? + gate(&hh, k)?)?);
                    let (r, z) = (sig(0)?, sig(1)?);
                    let cand = (gate(&x_t, 2)? + (r * gate(&hh, 2)?)?)?.tanh()?;
                    // h ← (1 − z)·n + z·h
                    h = ((z.affine(-1.0, 1.0)? * cand)? + (z * &h)?)?;
                }
            }
            outs[t] = Some(h.clone());
        }
        let outs: Vec<Tensor> = outs
            .into_iter()
            .map(|o| o.expect("every step ran"))
            .collect();
        Ok((Tensor::stack(&outs, 0)?, h, c))
    }
}

macro_rules! recurrent_layer {
    ($name:ident) => {
        impl $name {
            /// This layer's configuration.
            pub fn config(&self) -> &RecurrentConfig {
                &self.0.config
            }

            /// The final hidden state's shape for a batch of `n` (`None`: unbatched).
            pub fn state_dims(&self, n: Option<usize>) -> Vec<usize> {
                self.0.state_dims(n)
            }
        }

        /// Inside a `Sequential`: the output sequence, from zero initial states.
        impl ModuleT for $name {
            fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
                Ok(self.0.run(x, None, None, train)?.0)
            }
        }
    };
}

/// PyTorch's `nn.RNN`.
#[derive(Debug, Clone)]
pub struct Rnn(pub(crate) Stack);

/// PyTorch's `nn.LSTM`.
///
/// ```
/// use taper_nn::RecurrentConfig;
/// use taper_tensor::{DType, Device, ParamStore, Tensor};
/// let store = ParamStore::new(&Device::Cpu, DType::F32);
/// let lstm = RecurrentConfig::new(8, 16).num_layers(2).batch_first(true).lstm(&store)?;
/// let x = Tensor::zeros((4, 10, 8), DType::F32, &Device::Cpu)?; // (N, L, features)
/// let (y, (h, c)) = lstm.forward_with(&x, None, false)?;
/// assert_eq!((y.dims(), h.dims(), c.dims()), (&[4, 10, 16][..], &[2, 4, 16][..], &[2, 4, 16][..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Lstm(pub(crate) Stack);

/// PyTorch's `nn.GRU`.
#[derive(Debug, Clone)]
pub struct Gru(pub(crate) Stack);

recurrent_layer!(Rnn);
recurrent_layer!(Lstm);
recurrent_layer!(Gru);

impl Rnn {
    /// `nn.RNN(input_size, hidden_size)` with tanh and PyTorch's other defaults.
    pub fn new(input_size: usize, hidden_size: usize, store: &ParamStore) -> NnResult<Self> {
        RecurrentConfig::new(input_size, hidden_size).rnn(RnnNonlinearity::Tanh, store)
    }

    /// The output and the final hidden state h_n, from `h0` (zeros when `None`): PyTorch's
    /// `rnn(x, h0)`. A state of the wrong shape is an error naming the layer.
    pub fn forward_with(
        &self,
        x: &Tensor,
        h0: Option<&Tensor>,
        train: bool,
    ) -> Result<(Tensor, Tensor)> {
        self.0.run_hidden(x, h0, train)
    }
}

impl Gru {
    /// `nn.GRU(input_size, hidden_size)` with PyTorch's defaults.
    pub fn new(input_size: usize, hidden_size: usize, store: &ParamStore) -> NnResult<Self> {
        RecurrentConfig::new(input_size, hidden_size).gru(store)
    }

    /// The output and the final hidden state h_n, from `h0` (zeros when `None`).
    pub fn forward_with(
        &self,
        x: &Tensor,
        h0: Option<&Tensor>,
        train: bool,
    ) -> Result<(Tensor, Tensor)> {
        self.0.run_hidden(x, h0, train)
    }
}

impl Lstm {
    /// `nn.LSTM(input_size, hidden_size)` with PyTorch's defaults.
    pub fn new(input_size: usize, hidden_size: usize, store: &ParamStore) -> NnResult<Self> {
        RecurrentConfig::new(input_size, hidden_size).lstm(store)
    }

    /// The output and the final (h_n, c_n), from `state` = (h0, c0) (zeros when `None`):
    /// PyTorch's `lstm(x, (h0, c0))`. States of the wrong shape are errors naming the layer.
    pub fn forward_with(
        &self,
        x: &Tensor,
        state: Option<(&Tensor, &Tensor)>,
        train: bool,
    ) -> Result<(Tensor, (Tensor, Tensor))> {
        let (h0, c0) = match state {
            Some((h, c)) => (Some(h), Some(c)),
            None => (None, None),
        };
        let (y, h, c) = self.0.run(x, h0, c0, train)?;
        let c = c.ok_or_else(|| {
            candle_core::Error::Msg("LSTM: the recurrence returned no cell state".into())
        })?;
        Ok((y, (h, c)))
    }
}

impl Stack {
    /// The output and final hidden state of a recurrence without a cell state (RNN, GRU).
    fn run_hidden(&self, x: &Tensor, h0: Option<&Tensor>, train: bool) -> Result<(Tensor, Tensor)> {
        let (y, h, _) = self.run(x, h0, None, train)?;
        Ok((y, h))
    }

    /// The recurrence this stack runs.
    pub(crate) fn kind(&self) -> RecurrentKind {
        self.kind
    }
}
