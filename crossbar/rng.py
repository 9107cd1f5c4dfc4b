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

import numpy as np
from scipy.special import ndtri

from crossbar.jit import inline

__all__ = [
    "DOMAIN_D2D",
    "DOMAIN_DRIFT",
    "DOMAIN_DRIFT_ORIGIN",
    "DOMAIN_FAULT",
    "DOMAIN_PROGRAM",
    "DOMAIN_TABLE",
    "LANE_BITS",
    "NORMAL_TABLE",
    "SPLITMIX64_GAMMA",
    "SPLITMIX64_MIX1",
    "SPLITMIX64_MIX2",
    "check_seed",
    "derive_seed",
    "domain_key",
    "mix_seed",
    "mix_seed_int",
    "normal_from_hash",
    "normal_from_hash_np",
    "splitmix64",
    "splitmix64_np",
    "uniform_from_hash",
    "uniform_from_hash_np",
]

SPLITMIX64_GAMMA = 0x9E3779B97F4A7C15
"""SplitMix64's golden gamma (Steele et al. 2014), added to the counter before mixing."""
SPLITMIX64_MIX1 = 0xBF58476D1CE4E5B9
"""First multiplier of the SplitMix64 finaliser (Stafford's Mix13 variant)."""
SPLITMIX64_MIX2 = 0x94D049BB133111EB
"""Second multiplier of the SplitMix64 finaliser."""
LANE_BITS = 16
"""Random bits per normal draw: a 64-bit hash holds four lanes of 16 bits, each an index into NORMAL_TABLE."""
_LANE_MASK = (1 << LANE_BITS) - 1
_GOLDEN = np.uint64(SPLITMIX64_GAMMA)
_M1 = np.uint64(SPLITMIX64_MIX1)
_M2 = np.uint64(SPLITMIX64_MIX2)
_MASK64 = 0xFFFFFFFFFFFFFFFF
_INV_2_53 = 1.0 / 9007199254740992.0  # 2^-53: the top 53 bits of a hash as a float in [0, 1)

# Salts that separate the random streams of different processes drawn from the same (seed, stream).
DOMAIN_PROGRAM = 0x50524F47  # "PROG"
DOMAIN_DRIFT = 0x44524654  # "DRFT"
DOMAIN_FAULT = 0x46414C54  # "FALT"
DOMAIN_TABLE = 0x5441424C  # "TABL"
DOMAIN_D2D = 0x44324444  # "D2DD": device-to-device spread of the pulse step, fixed per cell
DOMAIN_DRIFT_ORIGIN = 0x4F524947  # "ORIG": latent state of cells clamped at 0 uS when drift starts


def _normal_table(bits: int = 16) -> np.ndarray:
    size = 1 << bits
    table = ndtri((np.arange(size, dtype=np.float64) + 0.5) / size)
    table -= table.mean()
    table /= table.std()
    return table.astype(np.float32)


NORMAL_TABLE: np.ndarray = _normal_table()
"""2^16 float32 quantiles of N(0, 1), unit variance; indexed by 16 random bits."""


@inline
def splitmix64(x: np.uint64) -> np.uint64:
    """SplitMix64 finaliser of x + golden gamma: a well-mixed 64-bit hash of a counter."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@inline
def uniform_from_hash(h: np.uint64) -> float:
    """The top 53 bits of a hash as a float in [0, 1)."""
    return float(h >> np.uint64(11)) * _INV_2_53


@inline
def normal_from_hash(h: np.uint64, lane: int, table: np.ndarray) -> float:
    """The unit normal of lane `lane` (0..3) of a hash: NORMAL_TABLE (passed as `table`) at bits 16 lane ..
    16 lane + 15."""
    return table[(h >> np.uint64(LANE_BITS * lane)) & np.uint64(_LANE_MASK)]  # unsigned: no wraparound test


def _splitmix64_int(x: int) -> int:
    """`splitmix64` on a Python int (arithmetic mod 2^64): the same bits, without NumPy scalars, for the per-call
    keys of the MVM path."""
    z = (x + SPLITMIX64_GAMMA) & _MASK64
    z = ((z ^ (z >> 30)) * SPLITMIX64_MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * SPLITMIX64_MIX2) & _MASK64
    return z ^ (z >> 31)


def mix_seed(seed: int, stream: int) -> np.uint64:
    """A 64-bit key for one random stream (e.g. one programming call or one forward pass) of one array."""
    return np.uint64(mix_seed_int(seed, stream))


def mix_seed_int(seed: int, stream: int) -> int:
    """`mix_seed` as a Python int (the MVM path's per-call read-noise key)."""
    return _splitmix64_int((int(seed) & _MASK64) ^ _splitmix64_int(int(stream) & _MASK64))


def domain_key(seed: int, stream: int, domain: int) -> np.uint64:
    """64-bit kernel key of one random process (`DOMAIN_*`: programming, drift, faults) of one (seed, stream)."""
    with np.errstate(over="ignore"):
        return np.uint64(splitmix64_np(mix_seed(seed, stream) ^ np.uint64(domain)))


def check_seed(name: str, value: object) -> None:
    """ValueError naming `name` unless `value` is an int >= 0 (a seed or a stream counter of a kernel call)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")


def splitmix64_np(x: np.ndarray | np.uint64) -> np.ndarray:
    """NumPy twin of `splitmix64` (uint64 arithmetic wraps as in the kernel)."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def uniform_from_hash_np(h: np.ndarray) -> np.ndarray:
    return (np.asarray(h, dtype=np.uint64) >> np.uint64(11)).astype(np.float64) * _INV_2_53


def normal_from_hash_np(h: np.ndarray, lane: int) -> np.ndarray:
    """NumPy twin of the kernels' normal draw: lane k (0..3) uses bits 16k..16k+15 of the hash."""
    index = (np.asarray(h, dtype=np.uint64) >> np.uint64(LANE_BITS * lane)) & np.uint64(_LANE_MASK)
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
