"""Counter-based random numbers shared by the numba kernels and their NumPy twins.

Kernels run in parallel threads, so a stateful generator would make results depend on thread scheduling. Instead
every random draw is a pure function of (seed, element index, draw index), hashed with SplitMix64 (Steele, Lea &
Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014). The same arithmetic in NumPy (`*_np`
functions) gives bit-identical draws, which is what the kernel-vs-reference tests rely on.

Gaussian draws use an inverse-CDF table of 2^16 equiprobable quantiles (the midpoints of 2^16 equal-probability
bins), rescaled to unit variance: each 16 bits of a hash give one N(0, 1) sample. The table is exact in mean and
variance, differs from a Gaussian by at most 2^-17 in CDF, and truncates the tails at about 4.4 sigma (a
probability of 1e-5 in both tails together). Four normals come from one 64-bit hash, which is why it is fast.
"""

from __future__ import annotations

import hashlib

import numba
import numpy as np
from scipy.special import ndtri

__all__ = [
    "NORMAL_TABLE",
    "derive_seed",
    "mix_seed",
    "mix_seed_int",
    "normal_from_hash_np",
    "splitmix64",
    "splitmix64_np",
    "uniform_from_hash",
    "uniform_from_hash_np",
]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _normal_table(bits: int = 16) -> np.ndarray:
    size = 1 << bits
    table = ndtri((np.arange(size, dtype=np.float64) + 0.5) / size)
    table -= table.mean()
    table /= table.std()
    return table.astype(np.float32)


NORMAL_TABLE: np.ndarray = _normal_table()
"""2^16 float32 quantiles of N(0, 1), unit variance; indexed by 16 random bits."""


@numba.njit(cache=True, inline="always")
def splitmix64(x: np.uint64) -> np.uint64:
    """SplitMix64 finaliser of x + golden gamma: a well-mixed 64-bit hash of a counter."""
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True, inline="always")
def uniform_from_hash(h: np.uint64) -> float:
    """The top 53 bits of a hash as a float in [0, 1)."""
    return float(h >> np.uint64(11)) * (1.0 / 9007199254740992.0)


_MASK64 = 0xFFFFFFFFFFFFFFFF


def _splitmix64_int(x: int) -> int:
    """`splitmix64` on a Python int (arithmetic mod 2^64): the same bits, without NumPy scalars, for the per-call
    keys of the MVM path."""
    z = (x + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def mix_seed(seed: int, stream: int) -> np.uint64:
    """A 64-bit key for one random stream (e.g. one programming call or one forward pass) of one array."""
    return np.uint64(mix_seed_int(seed, stream))


def mix_seed_int(seed: int, stream: int) -> int:
    """`mix_seed` as a Python int (the MVM path's per-call read-noise key)."""
    return _splitmix64_int((int(seed) & _MASK64) ^ _splitmix64_int(int(stream) & _MASK64))


def splitmix64_np(x: np.ndarray | np.uint64) -> np.ndarray:
    """NumPy twin of `splitmix64` (uint64 arithmetic wraps as in the kernel)."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def uniform_from_hash_np(h: np.ndarray) -> np.ndarray:
    return (np.asarray(h, dtype=np.uint64) >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def normal_from_hash_np(h: np.ndarray, lane: int) -> np.ndarray:
    """NumPy twin of the kernels' normal draw: lane k (0..3) uses bits 16k..16k+15 of the hash."""
    index = (np.asarray(h, dtype=np.uint64) >> np.uint64(16 * lane)) & np.uint64(0xFFFF)
    return NORMAL_TABLE[index.astype(np.int64)]


def derive_seed(seed: int, *labels: str) -> int:
    """The project's one way to derive a seed: a 63-bit integer determined by `seed` and the labels (BLAKE2b of
    both, stable across runs, platforms and Python versions), so every layer, task, array and phase gets its own
    reproducible stream. Callers needing fewer bits (e.g. numpy's legacy RandomState: 32) take it modulo 2**32."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not all(isinstance(label, str) for label in labels):
        raise ValueError(f"seed labels must be strings, got {labels!r}")
    text = "\x1f".join((str(int(seed)), *labels))
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)
