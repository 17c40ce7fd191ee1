"""Reader for the IDX format of MNIST-style files (``*-idx3-ubyte.gz``, ``*-idx1-ubyte.gz``).

The header is two zero bytes, a type code (0x08 for unsigned bytes), the number of
dimensions, then each dimension as a big-endian int32; the data follow.

Example:
    >>> import gzip, io, struct
    >>> raw = struct.pack(">BBBBI", 0, 0, 8, 1, 3) + bytes([7, 8, 9])
    >>> read_idx(io.BytesIO(gzip.compress(raw))).tolist()
    [7, 8, 9]
"""

from __future__ import annotations

import gzip
import os
import struct
from typing import BinaryIO

import numpy as np

__all__ = ["read_idx"]


def read_idx(source: str | os.PathLike | BinaryIO) -> np.ndarray:
    """The uint8 array in a gzipped IDX file; a clear ValueError if it is not one."""
    name = getattr(source, "name", source)
    try:
        with gzip.open(source, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as error:
        raise ValueError(f"{name} is not a readable gzip file: {error}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{name} is not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise ValueError(f"{name}: only unsigned-byte IDX data (type 0x08) is supported")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{name}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    size = int(np.prod(shape)) if shape else 0
    if len(raw) - header != size:
        raise ValueError(
            f"{name}: header promises {size} bytes of data for shape {shape}, "
            f"the file holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
