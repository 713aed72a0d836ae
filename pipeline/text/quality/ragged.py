"""Index arithmetic for ragged arrays (segments of varying length laid end to end)."""

from __future__ import annotations

import numpy as np


def excl_cumsum(a: np.ndarray) -> np.ndarray:
    """Where each segment of lengths ``a`` starts (exclusive prefix sum, int64)."""
    out = np.zeros(len(a), dtype=np.int64)
    if len(a) > 1:
        np.cumsum(a[:-1], out=out[1:])
    return out


def segment_offsets(cnt: np.ndarray) -> np.ndarray:
    """For segments of lengths ``cnt`` laid end to end: each element's offset in its segment."""
    return np.arange(int(cnt.sum())) - np.repeat(excl_cumsum(cnt), cnt)
