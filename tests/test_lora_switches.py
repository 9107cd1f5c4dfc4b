"""Fixed-scale LoRA arrays, task switches on the same arrays, full fine-tuning's tolerance rule, and per-cell wear
(issue 11, items 4 and 5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_fusion_support import ToyNet, random_bank, toy_task

from crossbar import AnalogLinear, convert_to_analog, device_preset, program
from crossbar.mapping import map_weights
from crossbar.state import ArrayState
from energy import WRITE_EVENTS, Ledger
from fusion import METHODS, adapt
from fusion.analog_lora import AnalogLoRALinear
from scenarios.wear import CellWear, cell_wear, model_wear, rotation_switches, switch_wear, switches_to_wearout

DEVICE = device_preset("reram_wan2022", programming_mode="statistical")


def test_fixed_scale_mapping_clips_and_keeps_one_scale() -> None:
    state = ArrayState.fresh(4, 3, DEVICE)
    weight = np.array([[0.0, 0.1, -0.2, 0.05], [0.0, 0.0, 0.0, 0.0], [0.9, -0.3, 0.0, 0.0]], dtype=np.float32)
    targets = map_weights(weight, DEVICE, state, weight_bound=0.5)
    assert targets.clipped == 1  # 0.9 > 0.5
    np.testing.assert_allclose(targets.out_scale, 0.5 / DEVICE.g_range_us)
    pos = state.to_matrix(targets.pos_us)
    assert pos[2, 0] == pytest.approx(DEVICE.g_max_us)  # clipped to full scale
    assert pos[0, 1] == pytest.approx(DEVICE.g_min_us + round(0.2 * 31) / 31 * DEVICE.g_range_us)  # 0.1 / 0.5
    assert np.all(pos[1] == DEVICE.g_min_us)  # a zero row stays at g_min (per-row max would not touch it either)
    with pytest.raises(ValueError, match="weight_bound"):
        map_weights(weight, DEVICE, state, weight_bound=0.0)


def _zero_b_array(bound: float | None) -> tuple[AnalogLinear, torch.Tensor]:
    weight = torch.zeros(8, 32)
    layer = AnalogLinear.from_weight(weight, None, DEVICE, seed=3, name="b", weight_bound=bound)
    layer.program()
    return layer, weight


@pytest.mark.parametrize("bound", [0.5, None])
def test_a_tiny_update_of_a_zero_b_writes_few_cells_on_a_fixed_scale(bound: float | None) -> None:
    layer, before = _zero_b_array(bound)
    after = before.clone()
    after[2, 5] = 0.02  # 4 % of the bound: beyond the 2.5 % verify tolerance
    after[2, 6] = 0.001  # 0.2 %: within tolerance
    report = layer.reprogram(after, previous_weight=before)
    if bound is not None:
        assert report.cells_targeted == 2  # one weight's pair; the tiny one and the rest of the row untouched
        assert layer.rewritten.sum() == 1 and layer.rewritten[2, 5]
    else:  # per-row normalisation: the first update maps to full scale and the row's other weights move too
        assert report.cells_targeted == 2 * 2  # both non-zero weights of the row, each now a large fraction


def test_in_situ_shadow_accumulates_small_updates_until_they_cross_the_tolerance() -> None:
    base = torch.nn.Linear(32, 8)
    lora = AnalogLoRALinear.program_from(
        base, torch.zeros(2, 32), torch.zeros(8, 2), DEVICE, scale=1.0, name="l", seed=0, scope=None,
        trainable=True, weight_bounds=(1.0, 1.0),
    )  # fmt: skip
    ledger = Ledger()
    with torch.no_grad():
        lora.shadow_B[0, 0] = 0.015  # 1.5 % of the bound: below tolerance
    lora.write_shadow(ledger.scope(phase="adapt"))
    assert ledger.cell_write_pulses() == 0 and ledger.total("count", event="verify_read") == 0
    with torch.no_grad():
        lora.shadow_B[0, 0] = 0.03  # 3 % from what was last written (0): written now
    lora.write_shadow(ledger.scope(phase="adapt"))
    assert ledger.cell_write_pulses() > 0
    assert ledger.total("count", event="verify_read") >= 2  # one pair of cells verified (and pulsed)


def test_full_finetune_rule_skips_cells_within_tolerance_and_keeps_the_row_scale() -> None:
    torch.manual_seed(0)
    weight = torch.randn(6, 40)
    continuous = DEVICE.replace(levels=None)  # level rounding aside: the tolerance rule alone
    layer = AnalogLinear.from_weight(weight, None, continuous, seed=1, name="w")
    layer.program()
    new = weight * 1.001  # every weight moves by far less than the tolerance
    row_max = weight[1].abs().argmax()
    new[1, row_max] = weight[1, row_max] * 0.5  # the row's largest weight halves: per-row scaling would move all
    report = layer.reprogram(new, previous_weight=weight, keep_scale=True)
    assert report.cells_targeted == 2
    assert layer.clipped_weights == 5  # the other rows' largest weights grew 0.1 % beyond their row's scale


def _toy():
    model = ToyNet()
    bank = random_bank(model, n_entries=2, rank=2, alpha=4.0)
    x, y = toy_task(model, bank, torch.tensor([1.0, 0.0]), 40)
    analog = convert_to_analog(model, DEVICE, seed=0)
    program(analog)
    return analog, x, y


@pytest.mark.parametrize("method", ["lora_program_once", "lora_in_situ"])
def test_task_switch_rewrites_the_previous_tasks_arrays(method: str) -> None:
    analog, x, y = _toy()
    config = METHODS[method].config(epochs=2, batch_size=10, rank=2)
    ledger = Ledger()
    kwargs = dict(ledger=ledger, seed=4, progress=False, val_fraction=0.0)
    first = adapt(method, analog, None, (x, y), config, task="t1", **kwargs)
    second = adapt(method, analog, None, (x, y), config, task="t2", previous=first.model, **kwargs)
    assert METHODS[method].task_sequence
    # The same physical arrays: their write counters carry the first task's pulses into the second.
    a_first = first.model.get_submodule("blocks.0.q").array_a
    a_second = second.model.get_submodule("blocks.0.q").array_a
    assert a_second.program_calls > a_first.program_calls >= 1
    assert (a_second.state.writes_pos.astype(np.int64) >= a_first.state.writes_pos).all()
    # The same task again from its own state: most cells already hold their target (same seed, same LoRA).
    p1 = ledger.cell_write_pulses(phase="adapt", task="t1")
    p2 = ledger.cell_write_pulses(phase="adapt", task="t2")
    # (in situ, training's own rewrites repeat in the second task; writing the start point again costs little)
    assert 0 < p1 and p2 < (0.5 if method == "lora_program_once" else 0.8) * p1, (p1, p2)
    # Wear of the switch comes from exact per-cell tallies that agree with the ledger.
    switch_ledger = Ledger.from_records([r for r in ledger.to_records() if r["task"] == "t2"])
    wear = model_wear(second.model, switch_ledger)
    total = sum(w.mean * w.cells for w in wear.values())
    assert total == pytest.approx(switch_ledger.total("count", event=WRITE_EVENTS))


def test_model_wear_refuses_writes_without_a_tally() -> None:
    layer, before = _zero_b_array(0.5)
    ledger = Ledger()
    after = before.clone()
    after[0, 0] = 0.3
    layer.reprogram(after, ledger.scope(phase="adapt"), previous_weight=before)  # no tally started
    with pytest.raises(RuntimeError, match="no pulse tally"):
        model_wear(torch.nn.Sequential(layer), ledger)


def test_cell_wear_from_hand_made_counts() -> None:
    counts = np.arange(101)  # 0..100 pulses
    wear = cell_wear(counts)
    assert (wear.cells, wear.p50, wear.p99, wear.max, wear.mean) == (101, 50.0, 99.0, 100.0, 50.0)
    skewed = np.zeros(200)
    skewed[:3] = [40, 10, 10]
    other = cell_wear(skewed)
    assert other.p50 == 0 and other.max == 40 and other.mean == pytest.approx(0.3)
    assert other.p99 == pytest.approx(10.0)  # 99th of 200 sorted values: between the 198th and 199th (10 and 10)
    switch = switch_wear({"a": wear, "b": other.as_dict()})
    assert switch.worst_array == "a" and switch.max_pulses == 100 and switch.p99_pulses == 99
    assert switch.mean_pulses == pytest.approx((50 * 101 + 0.3 * 200) / 301)
    assert switch.switches_to_wearout(1e6) == (1e4, pytest.approx(1e6 / switch.mean_pulses))
    assert switch_wear({}).max_pulses == 0 and switches_to_wearout(0.0, 1e6) == math.inf
    rows = [{"wear_max_pulses": 100, "wear_mean_pulses": 1, "endurance_pulses": 1e6},
            {"wear_max_pulses": 300, "wear_mean_pulses": 3, "endurance_pulses": 1e6}]  # fmt: skip
    assert rotation_switches(rows) == (1e6 / 200, 1e6 / 2)
    with pytest.raises(ValueError):
        cell_wear(np.array([-1.0]))
    assert isinstance(CellWear(**wear.as_dict()), CellWear)
