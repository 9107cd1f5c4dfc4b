"""Memory per simulated weight at toy size (issue 25 item 7), so that the LoRAFusion-scale benchmark cannot grow
again unnoticed: what a programmed, fused model holds beyond its arrays' state, and what one fusion training step
adds to the resident set with large freed blocks handed back (`simutil.memory.release_large_frees`, as the
benchmark runs).

The model is the benchmark's T5 shape scaled down (d_model 128, 2 + 2 blocks, vocabulary 512: 1.0 M base weights;
8 rank-8 LoRAs on q and v: 0.2 M bank weights), the step the benchmark's (activation checkpointing, ledger on).
"""

from __future__ import annotations

import dataclasses
import gc
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from crossbar.engine_numba import SCRATCH_MAX_FLOATS, SCRATCH_SHAPES

pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import lorafusion_scale  # noqa: E402

from crossbar import analog_layers, device_preset  # noqa: E402
from crossbar.hf import HFLogits, convert_and_program, random_hf_model  # noqa: E402
from energy import Ledger  # noqa: E402
from fusion import FusionConfig, attach_fusion, program_bank  # noqa: E402
from fusion.loop import ParamGroup, train_loop  # noqa: E402
from simutil.memory import release_large_frees  # noqa: E402

MIB = 2**20
TOKENS, ENTRIES, RANK = 32, 8, 8
"""Sequence length (encoder and decoder, batch 8), bank entries and their rank."""
STATE_PARTS = ("g_diff_us", "g_neg_us", "writes_pos", "writes_neg")
"""An array's state (`crossbar.state.ArrayState`, views of its buffers): 12 bytes per weight."""
HELD_BOUND_BYTES_PER_WEIGHT = 1.0
"""Bytes per simulated weight a programmed, fused model may hold beyond its arrays' state (12 B/weight), the
calibration read-out and the digital model's own parameters. Measured 0.24 at this toy width (per-line float64
conductance sums, per-row scales, the MVM engines' unit vectors: all O(1/width)); any per-weight cache (a float32
copy of the conductances, a transposed tile copy, a kept programming target: 4 B/weight each) fails it."""
STEP_BOUND_BYTES_PER_WEIGHT = 8.0
"""Resident bytes per simulated weight (base + bank) the second fusion step may add at its peak over the resident set
before it. Measured 2.3 (2.6 MiB: the batch's activations and MVM partial sums), 6.2 without
`release_large_frees` (glibc kept freed blocks resident: at full size that was 5 GiB, 6 B/weight, over one step);
a step that kept a float32 copy of every array for its backward pass (4 B/weight) fails it. The margin is for
noise in the resident set; the last test checks the allocator switch itself."""


def _toy_config() -> object:
    from transformers import T5Config

    return T5Config(
        d_model=128, d_kv=16, d_ff=352, num_layers=2, num_decoder_layers=2, num_heads=8, vocab_size=512,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.1, decoder_start_token_id=0,
    )  # fmt: skip


@pytest.fixture(scope="module")
def fused_toy() -> dict[str, object]:
    """The benchmark's pipeline at toy size: program base and bank, attach fusion, data for one step."""
    from transformers import T5ForConditionalGeneration

    release_large_frees()
    config = _toy_config()
    device = device_preset("reram_wan2022", programming_mode="statistical")
    model = random_hf_model(T5ForConditionalGeneration, config, seed=0, tie_weights=False)
    convert_and_program(model, device, seed=0)
    bank = lorafusion_scale.random_bank(config, n_entries=ENTRIES, rank=RANK, alpha=32.0, seed=1)
    programmed = program_bank(model, bank, device, None, seed=0)
    del bank  # the benchmark keeps its digital copy; it is not simulator state
    fused = attach_fusion(model, programmed, sharing="block", seed=0, use_magnitude=True)
    settings = FusionConfig()
    groups = [
        ParamGroup("coefficients", list(fused.coefficients.values()), lr=settings.coefficient_lr, l1=settings.l1),
        ParamGroup("magnitude", fused.magnitudes(), lr=settings.magnitude_lr),
    ]
    lorafusion_scale._enable_checkpointing(model)
    tokens = TOKENS
    generator = torch.Generator().manual_seed(2)
    x = torch.randint(0, config.vocab_size, (8, 2 * tokens), generator=generator)
    y = torch.randint(0, config.vocab_size, (8, tokens), generator=generator)
    toy = {
        "model": model, "wrapped": HFLogits(model, decoder_length=tokens, use_cache=False), "groups": groups,
        "x": x, "y": y, "weights": sum(layer.in_features * layer.out_features for _, layer in analog_layers(model)),
    }  # fmt: skip
    _step(toy)  # first-call costs (kernel loading, the MVM engines, pricings, conductance sums) before measuring
    return toy


def _step(toy: dict[str, object]) -> None:
    scope = Ledger().scope(phase="adapt", task="toy", method="fusion")
    train_loop(
        toy["wrapped"], toy["x"], toy["y"], toy["groups"], epochs=1, batch_size=8, seed=0, scope=scope,
        progress=False,
    )  # fmt: skip


def _storage(value: object) -> tuple[int, int] | None:
    """(address, bytes) of the memory a tensor or array views, None for anything else."""
    if isinstance(value, torch.Tensor):
        storage = value.untyped_storage()
        return storage.data_ptr(), storage.nbytes()
    if isinstance(value, np.ndarray):
        while isinstance(value.base, np.ndarray):
            value = value.base
        return value.__array_interface__["data"][0], value.nbytes
    return None


def _reachable(value: object, found: dict[tuple[int, int], str], seen: dict[int, object], path: str, depth: int = 0
               ) -> None:  # fmt: skip
    """Every tensor and array an object of this package holds (attributes, containers, dataclasses), once per
    memory block; modules are entered from `model.modules()`, not from here."""
    if depth > 8 or id(value) in seen or isinstance(value, torch.nn.Module):
        return
    seen[id(value)] = value  # kept alive: a freed object's id could come back for another one
    storage = _storage(value)
    if storage is not None:
        found.setdefault(storage, path)
        return
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = enumerate(value)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = ((f.name, getattr(value, f.name, None)) for f in dataclasses.fields(value))
    elif type(value).__module__.split(".")[0] in ("crossbar", "fusion", "energy", "simutil"):
        items = getattr(value, "__dict__", {}).items()
    else:
        return
    for key, item in items:
        _reachable(item, found, seen, f"{path}.{key}", depth + 1)


def test_programmed_fused_model_holds_little_beyond_its_state(fused_toy):
    model = fused_toy["model"]
    found: dict[tuple[int, int], str] = {}
    seen: dict[int, object] = {}
    for name, module in model.named_modules():
        _reachable({k: v for k, v in vars(module).items() if k != "_modules"}, found, seen, name or "model")
    state = {_storage(getattr(layer.state, part)) for _, layer in analog_layers(model) for part in STATE_PARTS}
    digital = {_storage(p) for name, p in model.named_parameters() if "magnitude" not in name}
    calibration = {_storage(t) for name, t in model.named_buffers() if name.rsplit(".", 1)[-1].startswith("cal_")}
    assert len(state) == 4 * len(analog_layers(model)) and state <= set(found)
    scratch = {key: path for key, path in found.items() if ".scratch." in path}  # batch buffers, not per weight
    assert sum(size for _, size in scratch) <= len(analog_layers(model)) * SCRATCH_SHAPES * 3 * SCRATCH_MAX_FLOATS * 4
    extra = {key: path for key, path in found.items() if key not in state | digital | calibration | set(scratch)}
    extra_bytes = sum(size for _, size in extra)
    largest = sorted(extra.items(), key=lambda item: -item[0][1])[:3]
    per_weight = extra_bytes / fused_toy["weights"]
    assert per_weight <= HELD_BOUND_BYTES_PER_WEIGHT, f"{per_weight:.3f} B/weight, largest: {largest}"
    assert sum(size for _, size in state) == 12 * fused_toy["weights"]  # no padding rows at these widths


def test_fusion_step_adds_bounded_resident_memory(fused_toy):
    peak_file = Path("/proc/self/clear_refs")
    if lorafusion_scale.rss_bytes() is None or not peak_file.exists():
        pytest.skip("needs Linux /proc to read and reset the peak resident set")
    gc.collect()
    try:
        peak_file.write_text("5")  # resets VmHWM, the peak resident set, to the present one
    except OSError:
        pytest.skip("cannot reset the peak resident set here")
    before = lorafusion_scale.rss_bytes()
    _step(fused_toy)
    peak = _peak_rss()
    per_weight = (peak - before) / fused_toy["weights"]
    assert per_weight <= STEP_BOUND_BYTES_PER_WEIGHT, f"{per_weight:.1f} B/weight ({(peak - before) / MIB:.1f} MiB)"


def _peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/self/status")


def test_large_freed_blocks_leave_the_resident_set():
    """The mechanism of the step's bound: with `release_large_frees`, 2 MiB blocks freed between small live objects
    are returned to the system (glibc's default would keep them resident once its threshold had risen)."""
    if not release_large_frees() or lorafusion_scale.rss_bytes() is None:
        pytest.skip("glibc on Linux only")
    np.ones(16 * MIB // 8).sum()  # a mapped 16 MiB block freed: the default threshold would rise past 2 MiB
    before = lorafusion_scale.rss_bytes()
    blocks, pins = [], []
    for _ in range(48):
        blocks.append(np.ones(2 * MIB // 8))
        pins.append(np.ones(64))  # small live objects between the blocks pin any heap space below them
    del blocks
    retained = lorafusion_scale.rss_bytes() - before
    assert retained < 16 * MIB, f"{retained / MIB:.1f} MiB of 96 MiB freed stayed resident"
    assert len(pins) == 48
