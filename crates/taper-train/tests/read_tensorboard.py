"""Reads a TensorBoard log directory with TensorBoard's own reader (EventAccumulator) and
prints what it found as JSON, for tests/tensorboard.rs.

Usage: python3 read_tensorboard.py LOGDIR
Exit code 3 (and a message) when the `tensorboard` package is not installed.
"""

import json
import sys

try:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
except ImportError as e:  # the test skips, saying so
    print(f"tensorboard is not installed: {e}")
    sys.exit(3)

acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
acc.Reload()
tags = acc.Tags()
out = {"scalars": {}, "histograms": {}, "hparams": {}, "metrics": []}
for tag in tags["scalars"]:
    out["scalars"][tag] = [[e.step, e.value] for e in acc.Scalars(tag)]
for tag in tags["histograms"]:
    out["histograms"][tag] = [
        {
            "step": e.step,
            "num": e.histogram_value.num,
            "min": e.histogram_value.min,
            "max": e.histogram_value.max,
            "sum": e.histogram_value.sum,
            "bucket_total": sum(e.histogram_value.bucket),
        }
        for e in acc.Histograms(tag)
    ]
try:
    hparams = acc.PluginTagToContent("hparams")
except KeyError:  # a run without hyperparameters
    hparams = {}
for tag, content in hparams.items():
    data = plugin_data_pb2.HParamsPluginData.FromString(content)
    kind = data.WhichOneof("data")
    if kind == "session_start_info":
        for name, v in data.session_start_info.hparams.items():
            out["hparams"][name] = getattr(v, v.WhichOneof("kind"))
    elif kind == "experiment":
        out["metrics"] = [m.name.tag for m in data.experiment.metric_infos]
        out["hparam_names"] = [h.name for h in data.experiment.hparam_infos]
print(json.dumps(out))
