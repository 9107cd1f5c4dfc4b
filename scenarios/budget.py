"""Each phase's peak memory and work, estimated from a validated scenario before anything runs; `crossbar-sim run`
refuses a study beyond the machine's available memory or `WORK_BOUND_CORE_S` unless `--allow-large`, and
`crossbar-sim validate` prints the estimates (and warns).

A phase runs in one process: its peak is `PROCESS_BYTES` plus its data, its model (weights, gradients and Adam
state when trained digitally, `ANALOG_BYTES_PER_WEIGHT` on arrays) and one batch's activations. Work is counted in
multiply-accumulates (MAC), programmed cells or generated examples, and turned into core-seconds by throughputs
measured in CPU time on this 2-core machine (2026-12-06) with both cores busy with other jobs, which made them
~2x slower than on the idle machine: the default study (d_model 64) and the same with d_model 384, d_ff 1536, in
warm processes. Seeds and sweep points are summed (phases cached across points are counted for each).

Against reality (peak RSS by `resource.getrusage`, one phase of seed 0 per process): the default study's base
training 534 MiB measured / 584 MiB estimated, programming 545 / 586, a fusion unit 633-656 / 597; with d_model
384 (7.1 M weights): base 896 / 819, programming 1406-1464 / 1669, a unit 1606-1609 / 1761; minilm_wordnet's
largest process 3.6 GB (README) / 2.3 GiB. Work: the default study's 3 seeds took 594 s on one idle core
(README), estimated 1,140 core-s; minilm_wordnet ~4,900 core-s, estimated 12,100.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from scenarios.errors import ScenarioError
from scenarios.families import get_task_family

__all__ = ["WORK_BOUND_CORE_S", "PhaseEstimate", "available_memory_bytes", "check_budget", "estimate_lines",
           "estimate_study", "human_bytes", "read_npz_headers"]  # fmt: skip

WORK_BOUND_CORE_S = 2 * 24 * 3600.0
"""Most estimated work `run` starts without `--allow-large` (core-seconds): 24 h of both cores of this machine."""
PROCESS_BYTES = 560 * 2**20
"""A phase process's resident memory besides its own data and model (bytes): torch, numba, kept allocator pages
(the default study's phases peak at 517-656 MiB with < 10 MiB of data and arrays)."""
ANALOG_BYTES_PER_WEIGHT = 160
"""Resident bytes per weight on arrays when programming, adapting and evaluating (conductances, counters, targets,
tallies, the blob, the method's and the evaluation's copies): 143-164 measured with 7.1 M weights."""
DIGITAL_MACS_PER_CORE_S = 8e9
"""Digital (torch) training, MAC per core-second: base 9.4e9, bank 7.7e9 at d_model 64; 1.8e10 at 384."""
TRAIN_MACS_PER_CORE_S, TRAIN_VECTOR_S = 1e10, 7.5e-6
"""Adaptation on simulated arrays: MAC per core-second, and core-seconds per input vector and array (DAC, ADC,
Python per small batch); fitted to a fusion unit at d_model 64 (6.8 ms per example-epoch) and 384 (30 ms)."""
INFER_MACS_PER_CORE_S, INFER_VECTOR_S = 2e10, 0.6e-6
"""Evaluation (batches of 512) likewise: 0.38 ms per example at d_model 64, 6.3 ms at 384."""
PROGRAM_CELLS_PER_CORE_S = 1.1e6
"""Cells per core-second of the programming phase (write-verify, serialisation): 14.2 M cells in 13 s."""
DATA_EXAMPLES_PER_CORE_S = 8e3
"""Examples generated per core-second (digits: 22.8 k in 2.9 s); npz and text families are faster."""
TRAIN_FACTOR, EVAL_BATCH = 3, 512
"""MAC of a digital training step per forward MAC (forward, input and weight gradients); examples per evaluation
batch (`scenarios.models.accuracy`)."""
_CAP = 1e18  # sizes beyond this are absurd already; capping keeps every product a finite float


@dataclass(frozen=True)
class PhaseEstimate:
    """One phase's estimated peak memory (bytes) and work (in `unit`, and as core-seconds)."""

    phase: str
    peak_bytes: float
    work: float
    unit: str
    core_s: float


class _Net(NamedTuple):
    """Per example: forward MAC, weights on arrays, trainable parameters, input vectors sent through arrays, floats
    kept for the backward pass, floats live at once in inference, input bytes."""

    macs: float
    weights: float
    params: float
    vectors: float
    activations: float
    live: float
    example_bytes: float


def _num(value: object) -> float:
    return float(min(value, _CAP)) if isinstance(value, (int, float)) else 0.0


def _sizes(scenario: Any) -> tuple[dict[str, float], dict[str, float]]:
    """The scenario's sizes by key path, and the defaults of those the schema gives one (for blaming a key)."""
    sizes: dict[str, float] = {}
    defaults: dict[str, float] = {}
    for section, names in (("model", ("d_model", "d_ff", "n_blocks", "patch_size", "batch_size", "base_epochs",
                                      "max_length")),
                           ("tasks", ("test_size", "base_train_size", "few_shot_train", "few_shot_val")),
                           ("bank", ("train_size", "epochs", "rank", "batch_size")),
                           ("calibration", ("samples",)), ("evaluate", ("repeats",))):  # fmt: skip
        spec = getattr(scenario, section)
        for name in names:  # a model kind has only its own keys (hf_encoder: no d_model)
            sizes[f"{section}.{name}"] = _num(getattr(spec, name, None))
            default = getattr(type(spec).model_fields.get(name), "default", None)
            if isinstance(default, int):
                defaults[f"{section}.{name}"] = float(default)
    sizes["bank.batch_size"] = sizes["bank.batch_size"] or sizes["model.batch_size"]
    sizes["bank.hardware_aware"] = float(bool(scenario.bank.hardware_aware))
    sizes.update({"evaluate.drift_times_s": len(scenario.evaluate.drift_times_s), "seeds": len(scenario.seed_list),
                  "tasks.sources": len(scenario.tasks.sources), "tasks.targets": len(scenario.tasks.targets)})
    defaults.update({"evaluate.drift_times_s": 1.0, "seeds": 1.0})
    if scenario.lifetime is not None:
        sizes["lifetime.simulate_exact"] = _num(scenario.lifetime.simulate_exact)
        defaults["lifetime.simulate_exact"] = 1.0
    for index, spec in enumerate(scenario.methods):
        config = spec.config()
        fields = type(config).__dataclass_fields__
        for name in ("epochs", "budget", "batch_size", "examples"):
            if name in fields:
                value = getattr(config, name)
                sizes[f"methods[{index}].{name}"] = _num(value if value is not None else scenario.tasks.few_shot_train)
                if isinstance(fields[name].default, int):
                    defaults[f"methods[{index}].{name}"] = float(fields[name].default)
    return sizes, defaults


def _input_shape(scenario: Any) -> tuple[int, ...]:
    """One input's shape: the family's, else the base npz file's header, else (1, 8, 8)."""
    family = get_task_family(scenario.tasks.family)
    if family.input_shape is not None:
        return family.input_shape
    try:
        shape = read_npz_headers(scenario.tasks.npz[scenario.tasks.base])["x_test"][0]
    except (OSError, ValueError, KeyError, TypeError):
        return (1, 8, 8)
    return tuple(int(d) for d in (shape[1:] if len(shape) == 4 else (1, *shape[1:])))


def read_npz_headers(path: str | Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of each `.npy` member of an npz archive, read from the member headers alone (nothing past a
    header is read or decompressed). Raises OSError or ValueError for a damaged archive or header."""
    headers = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.filename.endswith(".npy"):
                    with archive.open(info) as member:
                        version = np.lib.format.read_magic(member)
                        if version not in ((1, 0), (2, 0)):
                            raise ValueError(f"{info.filename}: .npy format {version}, expected 1.0 or 2.0")
                        fmt = np.lib.format
                        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                        shape, _, dtype = read(member)
                    headers[info.filename[:-4]] = (tuple(shape), dtype)
    except zipfile.BadZipFile as error:
        raise ValueError(str(error)) from None
    return headers


def _dims(scenario: Any, sizes: dict[str, float]) -> tuple[float, float, float, float]:
    """(width, d_ff, blocks, heads): the scenario's, or a pretrained encoder's config.json (MiniLM-L6's if that is
    unreadable: the checkpoint, not the scenario, sets them)."""
    if scenario.model.kind != "hf_encoder":
        blocks = sizes["model.n_blocks"] if scenario.model.kind == "transformer" else 1.0
        return sizes["model.d_model"], sizes["model.d_ff"], blocks, float(getattr(scenario.model, "n_heads", 1))
    from scenarios.encoder import resolve_model_path

    try:
        folder = scenario.source_path.parent if scenario.source_path is not None else None
        path = resolve_model_path(scenario.model.path, scenario.model.package, base=folder) / "config.json"
        config = json.loads(path.read_text())
        return tuple(float(config[k]) for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                                "num_attention_heads"))  # type: ignore[return-value]  # fmt: skip
    except (OSError, ValueError, KeyError, ScenarioError):
        return 384.0, 1536.0, 6.0, 12.0


def _net(scenario: Any, sizes: dict[str, float]) -> _Net:
    width, d_ff, blocks, heads = _dims(scenario, sizes)
    family = get_task_family(scenario.tasks.family)
    classes = float(family.n_classes or scenario.tasks.n_classes or 10)
    block = 4 * width**2 + 2 * width * d_ff
    if scenario.model.kind == "hf_encoder":  # token ids in; embeddings (~30 k words) are digital look-ups
        tokens, patch_in, classes, example_bytes = sizes["model.max_length"], 0.0, 0.0, 8 * sizes["model.max_length"]
    else:
        shape = _input_shape(scenario)
        channels, height, width_px = (float(d) for d in shape[-3:])
        example_bytes = 4.0 * math.prod(shape)
        if scenario.model.kind == "cnn":
            half, pooled = max(1.0, width // 2), math.ceil(height / 2) * math.ceil(width_px / 2)
            weights = 9 * channels * half + 9 * half * width + 2 * width * d_ff + width * classes
            macs = height * width_px * 9 * channels * half + pooled * 9 * half * width + 2 * width * d_ff
            return _Net(macs + width * classes, weights, weights, height * width_px + pooled + 3,
                        2 * height * width_px * half + 2 * pooled * width + 3 * d_ff + 2 * width,
                        height * width_px * half + pooled * width, example_bytes)  # fmt: skip
        tokens = max(1.0, (height // sizes["model.patch_size"]) * (width_px // sizes["model.patch_size"]))
        patch_in = channels * sizes["model.patch_size"] ** 2
    weights = patch_in * width + blocks * block + width * classes
    macs = tokens * (patch_in * width + blocks * block) + 2 * blocks * tokens**2 * width + width * classes
    return _Net(macs, weights, weights + tokens * width, tokens * (1 + 6 * blocks) + 1,
                blocks * tokens * (12 * width + 3 * d_ff + 2 * heads * tokens) + tokens * (patch_in + 2 * width),
                tokens * (d_ff + 3 * width + heads * tokens), example_bytes)  # fmt: skip


def _lora_weights(scenario: Any, sizes: dict[str, float]) -> float:
    """Weights of one bank entry: rank x (in + out) per adapted layer and block."""
    width, d_ff, blocks, _ = _dims(scenario, sizes)
    sides = {"fc1": width + d_ff, "fc2": width + d_ff}
    return blocks * sizes["bank.rank"] * sum(sides.get(name, 2 * width) for name in scenario.bank.modules)


def _phases(scenario: Any, sizes: dict[str, float]) -> list[PhaseEstimate]:
    """Every phase of one scenario (all its seeds): peak memory of its largest process and its total work."""
    net, seeds = _net(scenario, sizes), sizes["seeds"]
    val, test = sizes["tasks.few_shot_val"], sizes["tasks.test_size"]
    base_rows = sizes["tasks.base_train_size"] + val + test
    source_rows, target_rows = sizes["bank.train_size"] + val + test, sizes["tasks.few_shot_train"] + val + test
    n_sources, n_targets, n_methods = sizes["tasks.sources"], sizes["tasks.targets"], float(len(scenario.methods))
    all_rows = base_rows + n_sources * source_rows + n_targets * target_rows
    bank_weights = n_sources * _lora_weights(scenario, sizes)
    arrays = ANALOG_BYTES_PER_WEIGHT * (net.weights + bank_weights)
    exact = sizes.get("lifetime.simulate_exact", 0.0)
    adapt_macs = adapt_s = 0.0
    batch = 1.0
    for index in range(len(scenario.methods)):  # gradient methods: forward + transposed MVMs; lorahub: forward
        key = f"methods[{index}]"
        if f"{key}.epochs" in sizes:
            examples, factor = sizes[f"{key}.epochs"] * (sizes["tasks.few_shot_train"] + val), 2
        elif f"{key}.budget" in sizes:
            examples, factor = sizes[f"{key}.budget"] * sizes.get(f"{key}.examples", 0.0), 1
        else:
            continue
        batch = max(batch, sizes.get(f"{key}.batch_size", 1.0))
        adapt_macs += examples * factor * net.macs
        adapt_s += examples * factor * (net.macs / TRAIN_MACS_PER_CORE_S + net.vectors * TRAIN_VECTOR_S)
    units = seeds * (n_targets + exact)  # a lifetime's exactly simulated switches adapt and evaluate anew
    eval_passes = seeds * n_methods * test * (n_targets * sizes["evaluate.drift_times_s"] * sizes["evaluate.repeats"]
                                              + exact)  # fmt: skip
    per_eval_s = net.macs / INFER_MACS_PER_CORE_S + net.vectors * INFER_VECTOR_S
    generated = seeds * (2 * base_rows + n_sources * source_rows + n_targets * n_methods * target_rows)
    base_macs = sizes["model.base_epochs"] * sizes["tasks.base_train_size"] * TRAIN_FACTOR * net.macs
    if scenario.model.kind == "hf_encoder":  # not trained: every task loaded, the base task tested
        base_macs, generated = 0.0, generated + seeds * all_rows
    bank_macs = n_sources * sizes["bank.epochs"] * sizes["bank.train_size"] * TRAIN_FACTOR * net.macs
    cells = 2 * (net.weights + bank_weights)
    calibration_s = sizes["calibration.samples"] * per_eval_s
    batch_bytes = 4 * net.activations
    aware = sizes["bank.hardware_aware"]
    return [
        PhaseEstimate("data", PROCESS_BYTES + all_rows * net.example_bytes, generated, "examples generated",
                      generated / DATA_EXAMPLES_PER_CORE_S),
        PhaseEstimate("base", PROCESS_BYTES + base_rows * net.example_bytes + 16 * net.params
                      + sizes["model.batch_size"] * batch_bytes, seeds * (base_macs + test * net.macs), "MAC",
                      seeds * (base_macs + test * net.macs) / DIGITAL_MACS_PER_CORE_S),
        PhaseEstimate("bank", PROCESS_BYTES + source_rows * net.example_bytes + 4 * net.params
                      + 16 * bank_weights / max(n_sources, 1.0) + sizes["bank.batch_size"] * batch_bytes
                      + aware * ANALOG_BYTES_PER_WEIGHT * net.weights,
                      seeds * bank_macs, "MAC", seeds * _bank_core_s(bank_macs, n_sources, net, sizes, calibration_s)),
        PhaseEstimate("program", PROCESS_BYTES + arrays + base_rows * net.example_bytes, seeds * cells, "cells",
                      seeds * (cells / PROGRAM_CELLS_PER_CORE_S + calibration_s)),
        PhaseEstimate("adapt", PROCESS_BYTES + arrays + target_rows * net.example_bytes + batch * batch_bytes,
                      units * adapt_macs, "MAC", units * adapt_s),
        PhaseEstimate("evaluate", PROCESS_BYTES + arrays + target_rows * net.example_bytes
                      + min(EVAL_BATCH, test) * 4 * net.live, eval_passes * net.macs, "MAC",
                      eval_passes * per_eval_s),
    ]  # fmt: skip


def _bank_core_s(bank_macs: float, n_sources: float, net: _Net, sizes: dict[str, float], calibration_s: float
                 ) -> float:  # fmt: skip
    """Core-seconds of one seed's bank: digital training, or with `bank.hardware_aware` one base programming and
    calibration per source task and its LoRA trained through the arrays (forward and transposed MVMs)."""
    if not sizes["bank.hardware_aware"]:
        return bank_macs / DIGITAL_MACS_PER_CORE_S
    examples = sizes["bank.epochs"] * sizes["bank.train_size"]
    per_source = (2 * net.weights / PROGRAM_CELLS_PER_CORE_S + calibration_s
                  + examples * 2 * (net.macs / TRAIN_MACS_PER_CORE_S + net.vectors * TRAIN_VECTOR_S))  # fmt: skip
    return n_sources * per_source


def estimate_study(study: Any) -> list[PhaseEstimate]:
    """Each phase over a study's points (a `scenarios.sweep.Study`): the largest peak, the summed work."""
    per_point = [_phases(point.scenario, _sizes(point.scenario)[0]) for point in study.points]
    return [PhaseEstimate(phases[0].phase, max(p.peak_bytes for p in phases), sum(p.work for p in phases),
                          phases[0].unit, sum(p.core_s for p in phases)) for phases in zip(*per_point)]  # fmt: skip


def _blame(study: Any, measure: Any) -> str:
    """`key=value` of the setting whose reset to its default shrinks `measure(phases)` most, in the point where
    `measure` is largest ("" when no setting above its default does)."""
    scored = []
    for point in study.points:
        sizes, defaults = _sizes(point.scenario)
        scored.append((measure(_phases(point.scenario, sizes)), point.scenario, sizes, defaults))
    now, scenario, sizes, defaults = max(scored, key=lambda item: item[0])
    ratios = {key: now / max(measure(_phases(scenario, {**sizes, key: default})), 1e-300)
              for key, default in defaults.items() if sizes.get(key, default) > default}  # fmt: skip
    best = max(ratios, key=ratios.__getitem__, default="")
    if not best or ratios[best] <= 1.000001:
        return ""
    return f"; it comes mostly from {best}" + (f"={sizes[best]:.0f}" if sizes[best] < _CAP else "")


def available_memory_bytes() -> float | None:
    """Memory the machine can give a new process now (psutil, else /proc/meminfo MemAvailable; None if unknown)."""
    try:
        import psutil

        return float(psutil.virtual_memory().available)
    except ImportError:
        try:
            with open("/proc/meminfo") as meminfo:
                return next(float(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))
        except (OSError, ValueError, IndexError, StopIteration):
            return None


def check_budget(study: Any, *, allow_large: bool = False) -> list[str]:
    """The bounds the study exceeds, one line each naming the estimate and the setting it comes from: the largest
    phase's peak against the available memory, the total work against WORK_BOUND_CORE_S. Unless `allow_large`,
    any such line raises a one-line ScenarioError instead."""
    phases, problems, available = estimate_study(study), [], available_memory_bytes()
    worst = max(phases, key=lambda p: p.peak_bytes)
    if available is not None and worst.peak_bytes > available:
        key = _blame(study, lambda ps: next(p.peak_bytes for p in ps if p.phase == worst.phase))
        problems.append(f"phase {worst.phase} needs an estimated {human_bytes(worst.peak_bytes)} of memory, more "
                        f"than the {human_bytes(available)} available on this machine{key}")  # fmt: skip
    total = sum(p.core_s for p in phases)
    if total > WORK_BOUND_CORE_S:
        top = max(phases, key=lambda p: p.core_s)
        key = _blame(study, lambda ps: sum(p.core_s for p in ps))
        problems.append(f"the study needs an estimated {_duration(total)} of work (phase {top.phase}: "
                        f"{top.work:.2g} {top.unit}), above the bound of {_duration(WORK_BOUND_CORE_S)} "
                        f"(24 h of 2 cores){key}")  # fmt: skip
    if problems and not allow_large:
        raise ScenarioError(f"{'; '.join(problems)}: lower it, or pass --allow-large to run anyway")
    return problems


def estimate_lines(study: Any) -> list[str]:
    """One short line per phase (peak memory, work, core time) and a total, for `crossbar-sim validate`."""
    phases, available = estimate_study(study), available_memory_bytes()
    lines = [f"estimate {p.phase:<8} peak {human_bytes(p.peak_bytes):>9}, {p.work:.2g} {p.unit}, "
             f"~{_duration(p.core_s)}" for p in phases]  # fmt: skip
    memory = f" of {human_bytes(available)} available" if available is not None else ""
    return [*lines, f"estimate total   ~{_duration(sum(p.core_s for p in phases))} of work (bound "
            f"{_duration(WORK_BOUND_CORE_S)}); largest peak {human_bytes(max(p.peak_bytes for p in phases))}{memory}"]


def human_bytes(count: float) -> str:
    """A byte count in B, KiB, ... EiB, three significant digits."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if count < 1024:
            return f"{count:.3g} {unit}"
        count /= 1024
    return f"{count:.3g} EiB"


def _duration(core_s: float) -> str:
    """Core-seconds in the largest fitting unit."""
    if core_s < 120:
        return f"{core_s:.0f} core-s"
    return f"{core_s / 60:.0f} core-min" if core_s < 7200 else f"{core_s / 3600:.3g} core-h"
