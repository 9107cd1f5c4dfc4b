"""The scale benchmark's code path (benchmarks/lorafusion_scale.py) at toy size: build from a T5 config, convert and
program block by block, a random bank, attach fusion, one training step with and without activation checkpointing;
the ledger shows programming writes and none in the adaptation step."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import lorafusion_scale  # noqa: E402

from fusion import fusion_trainable_params, t5_attention_shapes  # noqa: E402


def _toy_run(checkpointing: bool) -> lorafusion_scale.ScaleResult:
    config = lorafusion_scale.t5_config(tiny=True)
    return lorafusion_scale.run(
        config, n_entries=3, rank=2, alpha=4.0, batch=2, source_length=6, target_length=4, seed=1,
        checkpointing=checkpointing, log=lambda _: None,
    )  # fmt: skip


def test_scale_benchmark_code_path_at_toy_size():
    result = _toy_run(checkpointing=True)
    ledger = result.ledger
    shapes = t5_attention_shapes(2, 2, 32, 32)
    assert result.counts["fused_layers"] == len(shapes) == 12
    assert result.counts["trainable_params"] == fusion_trainable_params(shapes, 3, sharing="block")
    assert result.counts["analog_layers"] == 2 * 7 + 2 * 11 + 1  # every linear layer, the LM head included
    assert result.counts["steps"] == 1 and result.loss > 0
    assert ledger.cell_write_pulses(phase="deploy_base") > 0 and ledger.cell_write_pulses(phase="deploy_bank") > 0
    assert ledger.cell_write_pulses(phase="adapt") == 0  # fusion writes nothing
    assert ledger.total("energy_pj", phase="adapt") > 0 and ledger.total("energy_pj", phase="calibration") > 0
    assert result.bytes_held["base_state"] == 12 * result.counts["linear_weights"]  # no padding at these widths
    assert result.peak_rss > 0 and set(result.times_s) >= {"program_base", "program_bank", "fusion_step"}
    lines = lorafusion_scale.metrics(result, full_size=False)
    names = {line["metric"] for line in lines}
    assert {"peak_rss_gib", "programming_s", "fusion_step_s", "write_pulses_adapt", "energy_adapt_uj"} <= names
    assert all("target" not in line for line in lines)  # targets only apply at full size
    json.dumps(lines)

    # without activation checkpointing: the same forward (same seeds, same loss); the recomputed forward of the
    # checkpointed run is on the ledger, so that run's adaptation reads more cells
    plain = _toy_run(checkpointing=False)
    assert plain.loss == result.loss
    assert plain.ledger.cell_write_pulses(phase="adapt") == 0

    def cell_reads(run: lorafusion_scale.ScaleResult) -> float:
        return run.ledger.total("count", phase="adapt", event="cell_read")

    assert cell_reads(result) > cell_reads(plain) > 0


def test_random_bank_covers_t5_q_and_v():
    config = lorafusion_scale.t5_config(tiny=True)
    bank = lorafusion_scale.random_bank(config, n_entries=2, rank=2, alpha=4.0, seed=0)
    assert bank.n_entries == 2 and len(bank.layer_names) == 12 and bank.scale == 2.0
    assert all(name.endswith((".q", ".v")) for name in bank.layer_names)
    a, b = bank.entries["lora00"]["encoder.block.0.layer.0.SelfAttention.q"]
    assert tuple(a.shape) == (2, 32) and tuple(b.shape) == (32, 2) and float(a.abs().max()) <= 32**-0.5
