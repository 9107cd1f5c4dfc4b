"""Fidelity: every device model next to the source it cites, on the same inputs, in one table.

Each source formula is re-implemented here from its file (path and line cited next to it); no package of the
sources is installed. Ours is always the simulator itself (program_state, apply_drift, analog_mvm, ir_drop), seeded.

Rows:
- sigma(G) at 8 levels per preset (both programming modes) vs the preset's fit (clamped as the source clamps);
- weight-error sigma (rms of (G+ - G-) - target) of a random matrix vs the fit;
- pulses per written cell and write energy, full swing and a typical LoRA update, vs NeuroSim V2.1's count and
  energy formula on the same targets, the energy in both conventions of `CostTable.write_energy` (NeuroSim's
  per-write one asserted within 5 %; the per-pulse default differs by design and is shown);
- drift: mean and sigma of the read conductance at the idle cell and four levels after 1 day and 2 days (the Wan
  fits' times), reached in 1 and in 24 steps, vs the source's exact clamped-Gaussian moments (reram_wan2022); 1 h
  and 30 days shown without a source value; mean shift and sigma vs the CMO/HfOx fit (reram_cmo_hfox);
- read noise: sigma of the MVM output per |x| and range vs aihwkit's w_noise convention;
- IR drop: the first-order model and the no-IR-drop MVM vs an exact nodal solve (scipy.sparse), and where the
  first-order error passes 5 % of full scale;
- line charging (`benchmarks/fidelity_lines.py`): write and read line energies of neurosim_rram vs NeuroSim V2.1's
  formulas on the same states and inputs; the neurosim_v21 ADC energy vs the source it follows, NeuroSim V2.1's
  own (32 nm LP, with the column term) beside it.

Run: python benchmarks/fidelity.py [--quick]. Tolerances: sigma within 10 %, pulse counts within 20 %, drift
sigma within 10 % (tests/test_fidelity.py asserts the same rows at smaller sizes).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from naive_ir_drop import nodal_weight_outputs  # noqa: E402

from crossbar.engine_numba import analog_mvm  # noqa: E402
from crossbar.ir_drop import ir_drop_conductances  # noqa: E402
from crossbar.mapping import Targets, map_weights  # noqa: E402
from crossbar.mvm import MvmSettings  # noqa: E402
from crossbar.noise import apply_drift  # noqa: E402
from crossbar.presets import device_preset  # noqa: E402
from crossbar.programming import program_state  # noqa: E402
from crossbar.state import ArrayState  # noqa: E402
from energy import CostTable, Ledger  # noqa: E402
from energy.costs import pulse_energy_pj  # noqa: E402

SIGMA_TOL = 0.10
PULSE_TOL = 0.20
DRIFT_TOL = 0.10
WRITE_ENERGY_TOL = 0.05
IR_LIMIT = 0.05


# --- the sources, re-implemented ----------------------------------------------------------------------------------
def aihwkit_wan_sigma(g_us: np.ndarray, t_s: float = 1.0) -> np.ndarray:
    """aihwkit src/aihwkit/inference/noise/reram.py lines 89-93 (coefficients at 1 s, 1 day, 2 days, in uS, for
    g_max 40 uS) and 98-107 (_apply_poly: sum_i c_i (g / g_max)^i). Only these three times exist (reram.py 160)."""
    coeffs = {
        1.0: [-16.815, 45.393, -43.853, 16.030, 0.348][::-1],
        86400.0: [-16.458, 47.095, -50.773, 22.086, 0.701][::-1],
        172800.0: [-11.934, 37.062, -43.507, 20.274, 0.782][::-1],
    }[t_s]
    x = np.asarray(g_us, dtype=np.float64) / 40.0
    return sum(c * x**k for k, c in enumerate(coeffs))


def crosssim_milo_sigma(g_us: np.ndarray) -> np.ndarray:
    """sandialabs/cross-sim simulator/devices/custom/RRAM_Milo.py lines 98-99: max(-0.009107 G + 4.782321, 0)."""
    return np.maximum(-0.009107 * np.asarray(g_us, dtype=np.float64) + 4.782321, 0.0)


def aihwkit_cmo_sigma(g_us: np.ndarray) -> np.ndarray:
    """aihwkit reram.py line 236 (coeff_dict[2], 2 % acceptance) and 252-260: 0.0112185391 + 0.01129027418 G."""
    return 0.0112185391 + 0.01129027418 * np.asarray(g_us, dtype=np.float64)


def aihwkit_cmo_drift(g_us: float, t_s: float) -> tuple[float, float]:
    """(mean shift, total sigma) of the CMO model at t (aihwkit reram.py 239-241, 306-315): the programmed spread
    (reram.py 260), relaxation 0.04201137 ln t + 0.41183342 and the 1/f term 0.0277316483 log10(G)
    sqrt(ln((t + 1e-6) / 2e-6)), independent Gaussians."""
    relax = 0.04201137 * math.log(t_s) + 0.41183342
    read = 0.0277316483 * math.log10(g_us) * math.sqrt(math.log((t_s + 1e-6) / (2 * 1e-6)))
    prog = float(aihwkit_cmo_sigma(np.array(g_us)))
    return -0.08900206 * math.log(t_s), math.sqrt(prog**2 + relax**2 + read**2)


def clamped_rms(target: np.ndarray, sigma: np.ndarray, low: float = 0.0) -> np.ndarray:
    """rms of max(target + sigma z, low) - target: the error a source that clamps at `low` produces (aihwkit
    reram.py 109, CrossSim devices/device.py 100-106 clip at 0)."""
    t = np.asarray(target, dtype=np.float64)
    s = np.maximum(np.asarray(sigma, dtype=np.float64), 1e-300)
    a = (low - t) / s  # clamped below a
    # E[(max(t + s z, low) - t)^2] = s^2 E[z^2; z > a] + (low - t)^2 P(z <= a)
    tail = s**2 * ((1 - norm.cdf(a)) + a * norm.pdf(a)) + (low - t) ** 2 * norm.cdf(a)
    return np.sqrt(tail)


def neurosim_write(g_old_us: np.ndarray, g_new_us: np.ndarray, device) -> tuple[np.ndarray, np.ndarray]:
    """(pulses, energy pJ) per cell of NeuroSim V2.1 Training_pytorch/NeuroSIM/ProcessingUnit.cpp lines 864-901:
    minDeltaConductance = (Gmax - Gmin) / maxNumLevel (865); a cell changing by >= that takes
    ceil(|dG| / minDelta) pulses (888, 892); energy V^2 / mean(1/G_new, 1/G_old) * t_pulse * pulses (895)."""
    delta = device.g_range_us / device.pulse_levels
    dg = np.abs(np.asarray(g_new_us, dtype=np.float64) - g_old_us)
    pulses = np.where(dg >= delta, np.ceil(dg / delta - 1e-9), 0.0)
    with np.errstate(divide="ignore"):
        g_mean = 1.0 / ((1.0 / g_new_us + 1.0 / g_old_us) / 2.0)
    energy = pulse_energy_pj(device.write_voltage_v, 1.0, device.write_pulse_ns) * g_mean * pulses
    return pulses, energy


# --- our side -----------------------------------------------------------------------------------------------------
@dataclass
class Row:
    group: str
    item: str
    ours: float
    source: float
    unit: str
    tolerance: float | None  # relative; None = stated, not asserted
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.ours / self.source if self.source else float("nan")

    @property
    def ok(self) -> bool | None:
        if self.tolerance is None:
            return None
        return abs(self.ratio - 1.0) <= self.tolerance


def _program_level(device, g: float, n_rows: int, n_cols: int, seed: int) -> np.ndarray:
    """Program G+ of n_rows x n_cols weights to g (G- to g_min) from a fresh array; the G+ errors (uS)."""
    state = ArrayState.fresh(n_rows, n_cols, device)
    shape = state.g_diff_us.shape
    targets = Targets(
        np.full(shape, g, np.float32), np.full(shape, device.g_min_us, np.float32), np.ones(n_cols, np.float32)
    )
    program_state(state, targets, device, seed=seed, stream=0)
    return state.g_pos_us().astype(np.float64).ravel() - np.float32(g)


SIGMA_SOURCES = {
    "reram_wan2022": ("aihwkit reram.py 89-111", lambda g: aihwkit_wan_sigma(g)),
    "reram_milo2021": ("CrossSim RRAM_Milo.py 98-99", crosssim_milo_sigma),
    "reram_cmo_hfox": ("aihwkit reram.py 236, 252-260", aihwkit_cmo_sigma),
}


def sigma_rows(n_rows: int = 128, n_cols: int = 128, seed: int = 0) -> list[Row]:
    rows = []
    for preset, (where, source) in SIGMA_SOURCES.items():
        for mode in ("write_verify", "statistical"):
            device = device_preset(preset, programming_mode=mode, tile_rows=256)
            for k, g in enumerate(np.linspace(device.g_min_us, device.g_max_us, 8)):
                err = _program_level(device, float(g), n_rows, n_cols, seed + k)
                ours = float(np.sqrt(np.mean(err**2)))
                want = float(clamped_rms(np.array(g), source(np.array(g))))
                rows.append(Row(f"sigma(G) {preset} {mode}", f"G = {g:.1f} uS", ours, want, "uS", SIGMA_TOL, where))
    return rows


def weight_error_rows(d_out: int = 64, d_in: int = 256, seed: int = 0) -> list[Row]:
    rows = []
    w = np.random.default_rng(seed).standard_normal((d_out, d_in)).astype(np.float32)
    for preset, (where, source) in SIGMA_SOURCES.items():
        for mode in ("write_verify", "statistical"):
            device = device_preset(preset, programming_mode=mode)
            state = ArrayState.fresh(d_in, d_out, device)
            targets = map_weights(w, device, state)
            program_state(state, targets, device, seed=seed, stream=0)
            err = (state.g_diff_us - (targets.pos_us - targets.neg_us))[state.valid_rows()[..., 0]]
            ours = float(np.sqrt(np.mean(err.astype(np.float64) ** 2)))
            real = state.valid_rows()[..., 0]
            tp, tn = targets.pos_us[real].astype(np.float64), targets.neg_us[real].astype(np.float64)
            want = float(np.sqrt(np.mean(clamped_rms(tp, source(tp)) ** 2 + clamped_rms(tn, source(tn)) ** 2)))
            rows.append(Row(f"weight error {preset}", f"{mode}, N(0,1) {d_out}x{d_in}", ours, want, "uS rms",
                            SIGMA_TOL, where))  # fmt: skip
    return rows


def _write_cells(device, start: np.ndarray, target: np.ndarray, seed: int):
    """Program G+ cells from `start` to `target` (G- idle at g_min), write-verify; per written G+ cell (pulses,
    write-pulse pJ in the per-pulse convention, write-pulse pJ in NeuroSim's per-write convention), and NeuroSim's
    count and energy for the same writes."""
    d_out = start.shape[2]
    per_write = []
    for convention in ("per_pulse", "neurosim"):
        state = ArrayState.fresh(start.shape[0] * start.shape[1], d_out, device)
        state.g_diff_us[...] = (start.reshape(state.g_diff_us.shape) - device.g_min_us).astype(np.float32)
        shape = state.g_diff_us.shape
        targets = Targets(target.reshape(shape).astype(np.float32), np.full(shape, device.g_min_us, np.float32),
                          np.ones(d_out, np.float32))  # fmt: skip
        start_g = state.g_pos_us().astype(np.float64)
        changed = np.abs(targets.pos_us - start_g) > 1e-6
        ledger = Ledger(CostTable(write_energy=convention))
        _, pp, _ = program_state(state, targets, device, seed=seed, stream=0, changed=changed, return_pulses=True,
                                 ledger=ledger.scope(phase="adapt"))  # fmt: skip
        n = int(changed.sum())
        per_write.append(
            (ledger.total("energy_pj", event="set_pulse") + ledger.total("energy_pj", event="reset_pulse")) / n
        )
    ns_pulses, ns_energy = neurosim_write(start_g[changed], targets.pos_us[changed].astype(np.float64), device)
    return float(pp[changed].sum()) / n, *per_write, float(ns_pulses.mean()), float(ns_energy.mean())


def pulse_rows(n_rows: int = 64, n_cols: int = 128, seed: int = 0) -> list[Row]:
    rows = []
    rng = np.random.default_rng(seed)
    for preset in ("neurosim_rram", "reram_wan2022"):
        device = device_preset(preset, tile_rows=n_rows, programming_noise="none")
        shape = (1, n_rows, n_cols)
        lo, hi = device.g_min_us, device.g_max_us
        full = _write_cells(device, np.full(shape, lo), np.full(shape, hi), seed)
        # a typical LoRA update: targets on the device's levels, one to three levels up or down from the present
        step = device.g_range_us / (device.levels - 1)
        level = rng.integers(3, device.levels - 3, shape)
        move = rng.choice([-3, -2, -1, 1, 2, 3], shape)
        lora = _write_cells(device, lo + level * step, lo + (level + move) * step, seed + 1)
        where = "NeuroSim V2.1 ProcessingUnit.cpp 865, 892"
        for name, (op, oe, oe_ns, sp, se) in (("full swing", full), ("LoRA update +-1..3 levels", lora)):
            rows.append(Row(f"pulses {preset}", name, op, sp, "pulses/cell", PULSE_TOL, where))
            rows.append(Row(f"write energy {preset} per_pulse", name, oe, se, "pJ/cell", None,
                            "ours per pulse (default); NeuroSim 895 per write: differ by design"))  # fmt: skip
            if se > 0:
                rows.append(Row(f"write energy {preset} neurosim", name, oe_ns, se, "pJ/cell", WRITE_ENERGY_TOL,
                                "NeuroSim V2.1 ProcessingUnit.cpp 895, per write"))  # fmt: skip
            else:  # g_min = 0 uS: every write starts or ends at R = infinity
                rows.append(Row(f"write energy {preset} neurosim", name, oe_ns, se, "pJ/cell", None,
                                "g_min = 0 uS: NeuroSim 895 gives 0 pJ (R infinite); ours the same"))  # fmt: skip
    return rows


def _programmed_at(device, g: float, n_rows: int, n_cols: int, seed: int) -> ArrayState:
    device = device.replace(programming_mode="statistical")
    state = ArrayState.fresh(n_rows, n_cols, device)
    shape = state.g_diff_us.shape
    targets = Targets(np.full(shape, g, np.float32), np.full(shape, device.g_min_us, np.float32),
                      np.ones(n_cols, np.float32))  # fmt: skip
    program_state(state, targets, device, seed=seed, stream=0)
    return state


def _drifted(device, g: float, times: list[float], n_rows: int, n_cols: int, seed: int) -> tuple[np.ndarray, ...]:
    """G+ programmed to g and its idle G- (at g_min), drifted through `times` (s) with one origin: (G+, G-) uS."""
    state = _programmed_at(device, g, n_rows, n_cols, seed)
    origin, t_from = None, 0.0
    for k, t_to in enumerate(times):
        origin = apply_drift(state, device, t_from_s=t_from, t_to_s=t_to, seed=seed, stream=k + 1, origin=origin)
        t_from = t_to
    real = state.valid_rows()[..., 0]
    return state.g_pos_us()[real].astype(np.float64).ravel(), state.g_neg_us[real].astype(np.float64).ravel()


def clamped_moments(target: float, sigma: float, low: float = 0.0) -> tuple[float, float]:
    """Mean and sigma of max(target + sigma z, low): what aihwkit's Wan model reads (reram.py 163-165, clamped at 0
    at 109)."""
    a = (low - target) / sigma
    p_above = 1.0 - norm.cdf(a)
    above_mean = target * p_above + sigma * norm.pdf(a)  # E[target + sigma z; z > a]
    above_sq = (target**2 + sigma**2) * p_above + (target + low) * sigma * norm.pdf(a)
    mean = above_mean + low * norm.cdf(a)
    return mean, math.sqrt(max(above_sq + low**2 * norm.cdf(a) - mean**2, 0.0))


WAN_DRIFT_LEVELS_US = (0.0, 2.0, 10.0, 20.0, 35.0)
"""Targets (uS) of the Wan drift rows: the idle cell (every weight has one), low levels where the 0 uS clamp acts,
mid-range and near g_max."""
WAN_FIT_TIMES = (("1 day", 86400.0), ("2 days", 172800.0))
"""The times aihwkit has a Wan fit for besides 1 s (reram.py 160-161)."""
NO_SOURCE_TIMES = (("1 h", 3600.0), ("30 days", 30 * 86400.0))
"""Times without a source fit: ours is shown, the source column is empty."""


def _wan_level_rows(g: float, n_rows: int, n_cols: int, seed: int) -> list[Row]:
    wan = device_preset("reram_wan2022")
    rows = []
    for label, t_s in WAN_FIT_TIMES + NO_SOURCE_TIMES:
        fitted = (label, t_s) in WAN_FIT_TIMES
        want_mean, want_sigma = clamped_moments(g, float(aihwkit_wan_sigma(np.array(g), t_s))) if fitted else (
            math.nan, math.nan)  # fmt: skip
        for n_steps in (1, 24):
            times = list(np.geomspace(t_s / 2**23, t_s, n_steps)) if n_steps > 1 else [t_s]
            pos, neg = _drifted(wan, g if g > 0 else 20.0, times, n_rows, n_cols, seed)
            cells = neg if g == 0 else pos
            item = f"G = {g:g} uS{' (idle cell)' if g == 0 else ''}, {label}, {n_steps} step{'s' * (n_steps > 1)}"
            note = "aihwkit reram.py 89-93, 163-165: clamped Gaussian" if fitted else "no source fit at this time"
            tol = DRIFT_TOL if fitted else None
            rows.append(Row("drift sigma reram_wan2022", item, float(cells.std()), want_sigma, "uS", tol, note))
            rows.append(Row("drift mean G reram_wan2022", item, float(cells.mean()), want_mean, "uS", tol, note))
    return rows


def drift_rows(n_rows: int = 128, n_cols: int = 128, seed: int = 0) -> list[Row]:
    """Wan: mean and sigma of the read conductance after drift, at the idle cell and four levels, reached in one
    step and in 24 (geometric times), against the source's exact clamped-Gaussian moments where a fit exists.
    CMO/HfOx: mean shift and total sigma of the active cell, and the idle cell's mean shift."""
    rows = [r for g in WAN_DRIFT_LEVELS_US for r in _wan_level_rows(g, n_rows, n_cols, seed)]
    cmo = device_preset("reram_cmo_hfox")
    g = 40.0
    for label, t_s in (("1 h", 3600.0), ("1 day", 86400.0), ("30 days", 30 * 86400.0)):
        pos, neg = _drifted(cmo, g, [t_s], n_rows, n_cols, seed)
        mean, sigma = aihwkit_cmo_drift(g, t_s)
        rows.append(Row("drift sigma reram_cmo_hfox", f"G = {g} uS, {label}", float((pos - g).std()), sigma, "uS",
                        DRIFT_TOL, "aihwkit reram.py 239-241, 306-315"))  # fmt: skip
        rows.append(Row("drift mean reram_cmo_hfox", f"G = {g} uS, {label}", float((pos - g).mean()), mean, "uS",
                        DRIFT_TOL, "aihwkit reram.py 306"))  # fmt: skip
        idle_mean, _ = aihwkit_cmo_drift(cmo.g_min_us, t_s)
        _, idle_sigma = aihwkit_cmo_drift(cmo.g_min_us, t_s)
        source, _ = clamped_moments(cmo.g_min_us + idle_mean, idle_sigma, low=cmo.g_min_us)
        rows.append(Row("drift mean reram_cmo_hfox", f"idle cell at g_min, {label}", float(neg.mean() - cmo.g_min_us),
                        source - cmo.g_min_us, "uS", None,
                        "source clamps at g_min (reram.py, end of apply_drift_noise_to_conductance); ours does not, "
                        "by design: the idle cell follows the relaxation"))  # fmt: skip
    return rows


def read_noise_rows(n_vectors: int = 4000, seed: int = 0) -> list[Row]:
    """Output sigma / (||x|| (g_max - g_min)) of the MVM vs aihwkit's w_noise for the same devices: additive
    constant weight noise w_noise * ||x||_2 per output (aihwkit src/rpucuda/rpu_forward_backward_pass.cpp 341-349),
    w_noise ~ 0.01 recommended for ReRAM read noise (aihwkit inference/noise/reram.py 40-42)."""
    rows = []
    rng = np.random.default_rng(seed)
    for preset in ("reram_wan2022", "reram_milo2021"):
        device = device_preset(preset, dac_bits=None, adc_bits=None, tile_rows=64)
        state = ArrayState.fresh(64, 8, device)
        state.g_diff_us[...] = rng.uniform(-0.5, 0.5, state.g_diff_us.shape).astype(np.float32) * device.g_range_us
        x_one = rng.uniform(-1, 1, 64).astype(np.float32)
        x_one[0] = 1.0
        x = torch.from_numpy(np.tile(x_one, (n_vectors, 1)))
        ones = torch.ones(8)
        noisy = analog_mvm(x, state, ones, MvmSettings.from_device(device), key=seed + 1).double().numpy()
        clean = analog_mvm(x[:1], state, ones, MvmSettings.from_device(device.replace(read_noise_frac=0.0)),
                           key=0).double().numpy()  # fmt: skip
        rel = (noisy - clean).std(axis=0).mean() / (np.linalg.norm(x_one) * device.g_range_us)
        rows.append(Row("read noise (weight sigma / range)", preset, float(rel), 0.01, "rel.", SIGMA_TOL,
                        "aihwkit w_noise 0.01 (rpu_forward_backward_pass.cpp 341-349)"))  # fmt: skip
    return rows


def ir_drop_rows(sizes: tuple[int, ...] = (16, 32, 64), seed: int = 0) -> list[Row]:
    """Worst case (every G+ at g_max, G- at g_min, all inputs at 1) and a random state, reram_wan2022 range;
    error as a fraction of full scale n * (g_max - g_min) * 1 V per output."""
    rows = []
    rng = np.random.default_rng(seed)
    g_max = 40.0
    for n in sizes:
        for r_ohm in (1.0, 2.1, 5.0):
            for case in ("all-on", "random"):
                if case == "all-on":
                    gp, gn = np.full((n, n), g_max), np.zeros((n, n))
                    x = np.ones((1, n))
                else:
                    gp, gn = rng.uniform(0, g_max, (n, n)), rng.uniform(0, g_max, (n, n))
                    x = rng.uniform(-1, 1, (8, n))
                exact = nodal_weight_outputs(gp, gn, x, r_ohm)
                ep, en = ir_drop_conductances(gp[None], gn[None], r_ohm, n)
                first = x @ (ep[0] - en[0])
                ideal = x @ (gp - gn)
                scale = n * g_max
                err_first = float(np.abs(first - exact).max() / scale)
                err_ideal = float(np.abs(ideal - exact).max() / scale)
                product = r_ohm * g_max * 1e-6 * n * n
                rows.append(Row("IR drop error / full scale", f"{n}x{n}, r = {r_ohm} Ohm, {case}, "
                                f"r G n^2 = {product:.3f}", err_first, err_ideal, "frac", None,
                                "ours = first order, source = no IR-drop model; both vs nodal"))  # fmt: skip
    return rows


ISAAC_IMA_MW = {"cell_read": 2.4, "adc_conversion": 16.0, "dac_conversion": 4.0, "shift_add": 0.2}
"""ISAAC Table 6 (Shafiee et al. ISCA 2016) per IMA: 8 memristor arrays 2.4 mW, 8 ADCs 16 mW, 8 x 128 DACs 4 mW,
4 shift-and-add units 0.2 mW; one IMA cycle: one 100 ns input-bit cycle of its 8 arrays (tests/test_scheme.py)."""


def isaac_slicing_rows(batch: int = 32, seed: int = 0) -> list[Row]:
    """Per-IMA power of the `isaac` preset's bit-sliced layer (16-bit weights over eight 2-bit cells: a 128 x 128
    N(0,1) weight matrix fills the 8 arrays of one IMA, one per digit) for three input statistics, vs ISAAC Table
    6. Converters and shift-adds do not depend on the inputs and are asserted; the arrays' read power does (it
    counts the cells conducting in each bit-cycle), and ISAAC gives one figure without saying for which inputs, so
    those rows are shown, not asserted. Read pulse 5 ns (MLP NeuroSim V3.0 Cell.cpp): an assumption, ISAAC states
    neither V_read nor t_read."""
    from crossbar.sliced import SlicedAnalogLinear

    device = device_preset("isaac", programming_mode="statistical")
    rng = np.random.default_rng(seed)
    weight = torch.from_numpy(rng.normal(size=(128, 128)).astype(np.float32))
    layer = SlicedAnalogLinear.from_weight(weight, None, device, seed=seed)
    layer.program()
    inputs = {"ReLU(N(0,1)) inputs": np.maximum(rng.normal(size=(batch, 128)), 0.0),
              "N(0,1) inputs": rng.normal(size=(batch, 128)), "U(0,1) inputs": rng.uniform(size=(batch, 128))}
    ima_cycles = batch * device.scheme.cycles(device.dac_bits)  # the 8 slice arrays read in parallel
    note = f"{device.weight_slices} slices of 2-bit cells, t_read {device.read_pulse_ns:g} ns (assumption)"
    rows = []
    for label, x in inputs.items():
        ledger = Ledger()
        layer.ledger = ledger.scope(phase="inference")
        with torch.no_grad():
            layer(torch.from_numpy(x.astype(np.float32)))
        for event, paper_mw in ISAAC_IMA_MW.items():
            ima_mw = ledger.total("energy_pj", event=event) / ima_cycles / 100.0  # pJ per ns = mW
            asserted = None if event == "cell_read" else 0.25
            rows.append(Row("ISAAC IMA power, 16-bit sliced weights", f"{event}, {label}", ima_mw, paper_mw, "mW",
                            asserted, note if asserted is None else ""))  # fmt: skip
    return rows


def all_rows(quick: bool = False) -> list[Row]:
    n = 64 if quick else 128
    return (
        sigma_rows(n, n)
        + weight_error_rows()
        + pulse_rows()
        + drift_rows(n, n)
        + read_noise_rows(1000 if quick else 4000)
        + ir_drop_rows((16, 32) if quick else (16, 32, 64))
        + _energy_rows(quick)
        + isaac_slicing_rows(16 if quick else 32)
    )


def _energy_rows(quick: bool) -> list[Row]:
    """Line charging (write and read) and ADC energy vs NeuroSim V2.1 (`benchmarks/fidelity_lines.py`)."""
    from fidelity_lines import energy_rows  # imports this module's Row: imported here, not at the top

    return energy_rows(quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller samples")
    args = parser.parse_args()
    rows = all_rows(args.quick)
    print(f"{'quantity':<40} {'case':<44} {'ours':>10} {'source':>10} {'ratio':>7}  {'ok':<4} {'unit':<12} source")
    for row in rows:
        ok = "—" if row.ok is None else ("yes" if row.ok else "NO")
        ratio = f"{row.ratio:7.3f}" if row.source and math.isfinite(row.source) else "      —"
        source = f"{row.source:10.4g}" if math.isfinite(row.source) else f"{'—':>10}"
        print(f"{row.group:<40} {row.item:<44} {row.ours:10.4g} {source} {ratio}  {ok:<4} {row.unit:<12} "
              f"{row.note}")  # fmt: skip
    ir = [r for r in rows if r.group.startswith("IR drop")]
    over = [r for r in ir if r.ours > IR_LIMIT]
    print()
    if over:
        print("IR drop: the first-order model's error exceeds 5 % of full scale for: "
              + "; ".join(r.item for r in over))  # fmt: skip
    else:
        print(f"IR drop: the first-order model stays within 5 % of full scale on every case shown (largest "
              f"{max(r.ours for r in ir):.2%}).")  # fmt: skip
    failed = [r for r in rows if r.ok is False]
    print(f"{len(rows)} rows, {sum(r.ok is True for r in rows)} within tolerance, {len(failed)} outside")


if __name__ == "__main__":
    main()
