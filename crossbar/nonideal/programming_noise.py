"""Programming-noise models: the fitted spread sigma(G) of a programmed conductance around its target, 1 s after
the chip's own write-verify, which both programming modes give every programmed cell (`crossbar.programming`).

Interface: sigma(G) = max(sum_k c_k x^k, 0) uS with x = G * scale + offset, a polynomial the programming kernels
evaluate (`crossbar.kernels._sigma_poly`); an entry gives its coefficients (uS) and whether x is G in uS or G
normalised to the device range. An entry with no coefficients (`none`) leaves the state the pulses end in.
`DeviceConfig.programming_noise` names an entry of `PROGRAMMING_NOISE_MODELS`. NumPy twin of the kernel side:
`tests/naive_programming.py::sigma_poly_np`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from crossbar.nonideal.registry import DeviceFields, Registry

__all__ = [
    "CMO_HFOX_SIGMA_COEFFS_US",
    "MILO2021_SIGMA_COEFFS_US",
    "PROGRAMMING_NOISE_MODELS",
    "WAN2022_G_MAX_REFERENCE_US",
    "WAN2022_SIGMA_COEFFS_US",
    "ProgrammingNoiseModel",
    "SigmaPolynomial",
]

WAN2022_SIGMA_COEFFS_US: tuple[float, ...] = (0.348, 16.030, -43.853, 45.393, -16.815)
"""sigma(g) = sum_k c_k g^k uS, g = G / G_max_ref, G_max_ref = 40 uS: Wan et al., Nature 2022, fitted at t = 1 s
after programming by aihwkit `inference/noise/reram.py` `ReRamWan2022NoiseModel.coeff_dic[1.0]` (src). Here g runs
0..1 over the device's [g_min, g_max] (for reram_wan2022, 0-40 uS, this is exactly aihwkit's g = G / 40 uS); the
sigma itself is not rescaled, as in aihwkit (whose `coeff_g_max_reference` equals the converter's g_max)."""
MILO2021_SIGMA_COEFFS_US: tuple[float, ...] = (4.782, -0.009107)
"""sigma(G) = max(4.782 - 0.009107 G, 0) uS, G in uS (50-225 uS): Milo et al., IRPS 2021, as fitted in CrossSim
`simulator/devices/custom/RRAM_Milo.py` (src)."""
CMO_HFOX_SIGMA_COEFFS_US: tuple[float, ...] = (0.0112185391, 0.01129027418)
"""sigma(G) = 0.0112 + 0.0113 G uS, G in uS: CMO/HfOx ReRAM with a 2 % acceptance range of the program-and-verify
loop, aihwkit `inference/noise/reram.py` `ReRamCMONoiseModel.coeff_dict[2]` (src; Falcone et al., in review)."""
WAN2022_G_MAX_REFERENCE_US = 40.0
"""uS, the G_max the Wan 2022 polynomial was fitted against (aihwkit `prog_coeff_g_max_reference`, src)."""


class SigmaPolynomial(NamedTuple):
    """What the programming kernels get: sigma(G) = max(sum_k coeffs[k] x^k, 0) uS, x = G * scale + offset."""

    scale: float
    """1 / uS (normalised argument) or 1 (argument in uS)."""
    offset: float
    """Added to G * scale (normalised: -g_min / (g_max - g_min))."""
    coeffs: np.ndarray
    """float64 coefficients in uS, constant term first; empty: no fitted error (the pulses' state is final)."""


@dataclass(frozen=True)
class ProgrammingNoiseModel:
    """A fitted programming error sigma(G) (module docstring), with its source."""

    name: str
    coeffs_us: tuple[float, ...]
    """Polynomial coefficients (uS), constant term first; () = no fitted error."""
    normalised: bool
    """True: x = (G - g_min) / (g_max - g_min), 0..1 over the device range; False: x = G in uS."""
    source: str
    twin: str = "tests/naive_programming.py::sigma_poly_np"
    """The NumPy twin of the kernel side (`file::function`)."""
    fidelity_rows: tuple[str, ...] = ()
    """Row groups of `benchmarks/fidelity.py` that check this model against its source."""

    def __post_init__(self) -> None:
        if not all(isinstance(c, (int, float)) and not isinstance(c, bool) and np.isfinite(c) for c in self.coeffs_us):
            raise ValueError(f"programming-noise model {self.name!r}: coeffs_us must be finite numbers (uS)")

    def polynomial(self, device: DeviceFields) -> SigmaPolynomial:
        """The kernels' record of this model on `device`."""
        coeffs = np.array(self.coeffs_us, dtype=np.float64)
        if not self.normalised:
            return SigmaPolynomial(1.0, 0.0, coeffs)
        scale = 1.0 / device.g_range_us  # x = (G - g_min) / (g_max - g_min): 0..1 over the device range
        return SigmaPolynomial(scale, -device.g_min_us * scale, coeffs)

    def sigma_us(self, g_us: np.ndarray, device: DeviceFields) -> np.ndarray:
        """sigma (uS, float64, shape of `g_us`) around targets `g_us` (uS), evaluated in the kernel's order."""
        scale, offset, coeffs = self.polynomial(device)
        x = np.asarray(g_us, dtype=np.float64) * scale + offset
        if coeffs.shape[0] == 0:
            return np.zeros(x.shape)
        acc = np.full(x.shape, coeffs[-1], dtype=np.float64)
        for c in coeffs[-2::-1]:  # Horner, in the same order as the kernel
            acc = acc * x + c
        return np.maximum(acc, 0.0)


PROGRAMMING_NOISE_MODELS: Registry[ProgrammingNoiseModel] = Registry(
    "programming_noise",
    "programming-noise model",
    (
        ProgrammingNoiseModel("none", (), False, "no fitted error: the state the write-verify pulses leave is final"),
        ProgrammingNoiseModel(
            "wan2022", WAN2022_SIGMA_COEFFS_US, True,
            "Wan et al., Nature 608, 2022, Ext. Data Fig. 3, via aihwkit inference/noise/reram.py "
            "ReRamWan2022NoiseModel.coeff_dic[1.0]",
            fidelity_rows=("sigma(G) reram_wan2022 write_verify", "sigma(G) reram_wan2022 statistical",
                           "weight error reram_wan2022"),
        ),  # fmt: skip
        ProgrammingNoiseModel(
            "milo2021", MILO2021_SIGMA_COEFFS_US, False,
            "Milo et al., IRPS 2021, Fig. 4, via CrossSim simulator/devices/custom/RRAM_Milo.py",
            fidelity_rows=("sigma(G) reram_milo2021 write_verify", "sigma(G) reram_milo2021 statistical",
                           "weight error reram_milo2021"),
        ),  # fmt: skip
        ProgrammingNoiseModel(
            "cmo_hfox", CMO_HFOX_SIGMA_COEFFS_US, False,
            "CMO/HfOx ReRAM, 2 % acceptance range, via aihwkit inference/noise/reram.py "
            "ReRamCMONoiseModel.coeff_dict[2] (Falcone et al., in review)",
            fidelity_rows=("sigma(G) reram_cmo_hfox write_verify", "sigma(G) reram_cmo_hfox statistical",
                           "weight error reram_cmo_hfox"),
        ),  # fmt: skip
    ),
)
"""Programming-noise models by name (`DeviceConfig.programming_noise`)."""
