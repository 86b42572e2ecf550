"""The IDX reader the PyTorch benchmark scripts share (imported from their folder)."""
import gzip
import struct

import numpy as np


def idx(path):
    """An IDX file (gzip-compressed when its name ends in .gz) as a uint8 numpy array."""
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        data = f.read()
    nd = data[3]
    dims = struct.unpack(">" + "I" * nd, data[4:4 + 4 * nd])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * nd).reshape(dims)
