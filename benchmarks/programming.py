"""Write-verify programming throughput: the numba kernel vs its NumPy reference, timed in the same run.

Workload: a 2048 x 2048 weight array (8 tiles of 256 rows; 8,388,608 cells, G+ and G- of every weight) on the
default preset `reram_wan2022` in `write_verify` mode, from a fresh array (every cell at g_min) to targets drawn
uniformly in [g_min, g_max] for every cell (seeded), so that every cell but the few already within tolerance is
written. "Cells" counts both cells of a weight, as `ProgramReport.cells_targeted` does.

Timing: `program_state` (validation, kernel, reduction) after a warm-up call on a small array (so numba's compile
or cache load is excluded), median over repeats, each on a new state whose memory was touched before timing (the
page faults of a fresh allocation are the allocator's cost, reported separately). The NumPy reference
(`tests/naive_programming.write_verify_np`, the kernel's bit-exact twin) is too slow for all rows: it runs once on
the first 256 rows (1,048,576 cells) and its time is scaled per cell; the benchmark checks that the kernel gives
bit-identical conductances, counters and pulse counts on those rows. Also reported: the statistical mode's
throughput, and a profile (verify-only pass, one thread, untouched memory).

Bandwidth bound, measured in the same run: `crossbar.bandwidth.store_state_kernel`, a numba pass over the same
arrays with the same row parallelism that reads the targets once and writes the state once (no pulses, no noise,
no verify reads). Its cells/s is what memory bandwidth allows here; the write-verify kernel's cells/s is reported
as a fraction of it (target >= 0.3), so the figure holds on any machine. With the incremental pulse model (about
18 simulated pulses and verify reads per cell on this workload) the kernel is compute-bound: the fraction says how
far from the memory floor the per-pulse arithmetic keeps it.

Run: python benchmarks/programming.py [--repeats N]. The last lines are JSON, one metric per line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from naive_programming import write_verify_np  # noqa: E402

from crossbar.bandwidth import store_state_kernel  # noqa: E402
from crossbar.mapping import Targets  # noqa: E402
from crossbar.presets import device_preset  # noqa: E402
from crossbar.programming import fitted_error_polynomial, program_state, pulse_model_params  # noqa: E402
from crossbar.rng import DOMAIN_D2D, DOMAIN_PROGRAM, domain_key  # noqa: E402
from crossbar.state import ArrayState, pulses_per_count  # noqa: E402
from energy.costs import pulse_energy_pj  # noqa: E402

D_IN = D_OUT = 2048
REFERENCE_ROWS = 256
TARGET_CELLS_PER_S = 4e7
TARGET_SPEEDUP = 10.0
TARGET_BOUND_FRACTION = 0.3
SEED = 0


def _state(device, d_in: int = D_IN, touch: bool = True) -> ArrayState:
    state = ArrayState.fresh(d_in, D_OUT, device)
    if touch:  # fault the pages in now, not inside the timed call
        for array in (state.g_diff_us, state.writes_pos, state.writes_neg):
            array.fill(0)
    return state


def _time_program(device, targets: Targets, repeats: int, *, touch: bool = True) -> tuple[float, object]:
    samples, report = [], None
    for k in range(repeats):
        state = _state(device, touch=touch)
        start = time.perf_counter()
        report = program_state(state, targets, device, seed=SEED, stream=k)
        samples.append(time.perf_counter() - start)
    return float(np.median(samples)), report


def _time_bound(device, targets: Targets, repeats: int) -> float:
    """Median time of the bandwidth-floor pass (read targets, write state once) on touched fresh states."""
    rows = targets.pos_us.shape[0] * targets.pos_us.shape[1]
    pos, neg = (t.reshape(rows, D_OUT) for t in (targets.pos_us, targets.neg_us))
    samples = []
    for k in range(repeats + 1):  # the first call loads or compiles the kernel
        state = _state(device)
        views = [a.reshape(rows, D_OUT) for a in (state.g_diff_us, state.g_neg_us, state.writes_pos,
                                                  state.writes_neg)]  # fmt: skip
        start = time.perf_counter()
        store_state_kernel(pos, neg, *views)
        if k:
            samples.append(time.perf_counter() - start)
    return float(np.median(samples))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    device = device_preset("reram_wan2022")
    assert device.programming_mode == "write_verify"
    statistical = device.replace(programming_mode="statistical")
    probe = _state(device)
    shape = probe.g_diff_us.shape
    rng = np.random.default_rng(SEED)
    pos = rng.uniform(device.g_min_us, device.g_max_us, shape).astype(np.float32)
    neg = rng.uniform(device.g_min_us, device.g_max_us, shape).astype(np.float32)
    targets = Targets(pos_us=pos, neg_us=neg, out_scale=np.ones(D_OUT, dtype=np.float32))
    cells = 2 * D_IN * D_OUT

    # warm-up: compile or load every kernel used below
    for config in (device, statistical):
        small = ArrayState.fresh(4, D_OUT, config)  # one tile of 4 rows
        small_targets = Targets(pos[:1, :4].copy(), neg[:1, :4].copy(), targets.out_scale)
        program_state(small, small_targets, config, seed=SEED, stream=0)

    wv_s, report = _time_program(device, targets, args.repeats)
    bound_s = _time_bound(device, targets, args.repeats)
    assert report.cells_targeted == cells
    stat_s, stat_report = _time_program(statistical, targets, args.repeats)

    # NumPy reference on the first tile of rows, same targets, same draws; checked against the kernel.
    ref_device = device.replace()
    rows = REFERENCE_ROWS
    ref_state = _state(ref_device, rows)
    kernel_state = _state(ref_device, rows)
    sub = Targets(pos[:1].copy(), neg[:1].copy(), targets.out_scale)
    span = device.g_range_us
    scale, offset, coeffs = fitted_error_polynomial(device)
    twin_args = {
        "g_min": float(device.g_min_us), "g_max": float(device.g_max_us), "tol": device.verify_tolerance_frac * span,
        "pm": pulse_model_params(device), "d2d_key": domain_key(SEED, 0, DOMAIN_D2D), "poly_scale": scale,
        "poly_offset": offset, "coeffs": coeffs,
        "max_pulses": device.max_pulses, "endurance": float(device.endurance_pulses),
        "ppc": pulses_per_count(device), "key": domain_key(SEED, 0, DOMAIN_PROGRAM),
        "write_coef": pulse_energy_pj(device.write_voltage_v, 1.0, device.write_pulse_ns),
        "read_coef": pulse_energy_pj(device.read_voltage_v, 1.0, device.read_pulse_ns),
    }  # fmt: skip
    views = [a.reshape(rows, D_OUT) for a in (ref_state.g_diff_us, ref_state.g_neg_us, ref_state.writes_pos,
                                                ref_state.writes_neg)]  # fmt: skip
    start = time.perf_counter()
    totals, ref_pp, ref_pn = write_verify_np(*views, pos[0], neg[0], None, rows, **twin_args)
    ref_s = time.perf_counter() - start
    _, k_pp, k_pn = program_state(kernel_state, sub, ref_device, seed=SEED, stream=0, return_pulses=True)
    identical = (
        all(
            np.array_equal(getattr(ref_state, n), getattr(kernel_state, n))
            for n in ("g_diff_us", "g_neg_us", "writes_pos", "writes_neg")
        )
        and np.array_equal(ref_pp, k_pp[0])
        and np.array_equal(ref_pn, k_pn[0])
    )
    if not identical:
        raise SystemExit("kernel and NumPy reference disagree on the reference rows")
    ref_cells = 2 * rows * D_OUT
    ref_per_cell = ref_s / ref_cells

    # profile: verify-only pass (targets = current conductances), one thread, untouched fresh memory
    settled = Targets(np.zeros(shape, np.float32), np.zeros(shape, np.float32), targets.out_scale)
    verify_only_s, verify_report = _time_program(device, settled, args.repeats)
    assert verify_report.pulses == 0
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        one_thread_s, _ = _time_program(device, targets, max(1, args.repeats // 2))
    finally:
        numba.set_num_threads(threads)
    untouched_s, _ = _time_program(device, targets, args.repeats, touch=False)

    cells_per_s = cells / wv_s
    bound_cells_per_s = cells / bound_s
    pulses_per_cell = report.pulses / report.cells_targeted
    speedup = ref_per_cell / (wv_s / cells)
    print(f"reram_wan2022 write_verify, {D_IN}x{D_OUT} weights = {cells:,} cells, g_min -> uniform targets")
    print(f"numba threads: {threads}; median of {args.repeats}; numba kernel {wv_s * 1e3:.1f} ms")
    print(f"mean pulses per cell {pulses_per_cell:.3f} (SET {report.set_pulses:,}, RESET {report.reset_pulses:,})")
    print(
        f"NumPy reference: timed on the first {rows} of {D_IN} rows ({ref_cells:,} cells) in {ref_s:.2f} s, scaled "
        f"per cell to {ref_per_cell * cells:.2f} s for the whole array; bit-identical to the kernel on those rows"
    )
    print(f"bandwidth bound (read targets, write state once): {bound_s * 1e3:.1f} ms = {bound_cells_per_s:,.0f} "
          f"cells/s; write-verify reaches {cells_per_s / bound_cells_per_s:.4f} of it")  # fmt: skip
    print(f"statistical mode: {stat_s * 1e3:.1f} ms, {stat_report.pulses / stat_report.cells_targeted:.3f} pulses/cell")
    print(f"profile: verify-only pass (no pulses) {verify_only_s * 1e3:.1f} ms; pulse loops "
          f"{(wv_s - verify_only_s) * 1e3:.1f} ms; 1 thread {one_thread_s * 1e3:.1f} ms "
          f"({one_thread_s / wv_s:.2f}x the {threads}-thread time); on an untouched fresh array (page faults "
          f"in the call) {untouched_s * 1e3:.1f} ms")  # fmt: skip
    metrics = [
        {"metric": "programming_cells_per_s", "value": round(cells_per_s), "target": TARGET_CELLS_PER_S,
         "unit": "cells/s"},
        {"metric": "programming_bandwidth_bound_cells_per_s", "value": round(bound_cells_per_s), "target": None,
         "unit": "cells/s"},
        {"metric": "programming_fraction_of_bandwidth_bound", "value": round(cells_per_s / bound_cells_per_s, 4),
         "target": TARGET_BOUND_FRACTION, "unit": "ratio"},
        {"metric": "programming_pulses_per_s", "value": round(report.pulses / wv_s), "target": None,
         "unit": "pulses/s"},
        {"metric": "programming_mean_pulses_per_cell", "value": round(pulses_per_cell, 4), "target": None,
         "unit": "pulses/cell"},
        {"metric": "programming_speedup_vs_numpy", "value": round(speedup, 2), "target": TARGET_SPEEDUP,
         "unit": "ratio"},
        {"metric": "programming_statistical_cells_per_s", "value": round(cells / stat_s), "target": None,
         "unit": "cells/s"},
    ]  # fmt: skip
    for metric in metrics:
        print(json.dumps(metric))


if __name__ == "__main__":
    main()
