"""fusion_rank, fusion_core and fusion_gate (fusion/methods/mixing*.py), each against its docstring: no cell written
(ledger and conductances), the forward equal to its equation on dense tensors (ideal preset), trainable and
digital-state counts equal to their formulas, loss going down on a toy task, and a run through the CLI with the
methods (and LoRAFusion's one-line setting of `fusion`) listed in YAML."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from test_fusion_support import ToyNet, random_bank, toy_task

from crossbar import AnalogLinear, convert_to_analog, device_preset, program, record_all_to
from energy import Ledger
from fusion import (
    METHODS,
    CoefficientGate,
    FusionConfig,
    FusionGateConfig,
    GatedLinear,
    MixedLinear,
    adapt,
    attach_gate,
    attach_mixing,
    calibrate_norms,
    evaluate_loss,
    program_bank,
)
from fusion.digital_state import digital_state
from fusion.fused import read_weight
from fusion.peft_export import export_fused_peft
from scenarios.loading import load_scenario
from scenarios.schema import ScenarioError

N, R = 3, 2  # bank entries and rank of the toy bank
C_TASK = torch.tensor([1.0, 0.0, 1.0])
CASES = [
    ("fusion_rank", {}),
    ("fusion_rank", {"magnitudes": False, "share": "block", "init": "xavier"}),
    ("fusion_core", {"share": "block"}),
    ("fusion_core", {"magnitudes": False, "share": "global"}),
    ("fusion_gate", {}),
    ("fusion_gate", {"share": "block", "pool": "sequence", "activation": "sigmoid", "start": "uniform"}),
]


def config(method: str, **settings: object):
    return METHODS[method].config(**settings)


def snapshot(model: torch.nn.Module) -> dict[str, tuple[bytes, ...]]:
    """Every analog array's conductances and write counters as bytes, by array name."""
    return {m.name: tuple(getattr(m.state, f).tobytes() for f in ("g_diff_us", "g_neg_us", "writes_pos", "writes_neg"))
            for m in model.modules() if isinstance(m, AnalogLinear)}  # fmt: skip


def n_groups(share: str, layers: list[str]) -> int:
    return {"layer": len(layers), "block": len({n.rsplit(".", 1)[0] for n in layers}), "global": 1}[share]


def expected_counts(method: str, settings: dict, shapes, storage: str = "readout") -> tuple[int, int]:
    """(trainable, calibration words) from the docstrings' formulas."""
    width = N * R
    groups = n_groups(settings.get("share", "layer"), [s.name for s in shapes])
    if method == "fusion_gate":
        d_in = shapes[0].d_in
        return groups * (N * d_in + N + 1), 0
    mix = groups * (width if method == "fusion_rank" else width * width)
    if not settings.get("magnitudes", True):
        return mix, 0
    per_layer = {"readout": lambda d: d + 2 * d * width + width * width,
                 "on_demand": lambda d: d}[storage]  # fmt: skip
    return mix + sum(s.d_out for s in shapes), sum(per_layer(s.d_out) for s in shapes)


@pytest.fixture(scope="module")
def toy():
    model = ToyNet()
    bank = random_bank(model, n_entries=N, rank=R, alpha=4.0)
    x, y = toy_task(model, bank, C_TASK, 100)
    return model, bank, x, y


@pytest.fixture(scope="module")
def ideal(toy):
    model, bank, _, _ = toy
    device = device_preset("ideal")
    analog = convert_to_analog(model, device, seed=0)
    program(analog)
    return analog, program_bank(analog, bank, device, seed=0)


@pytest.fixture(scope="module")
def reram(toy):
    model, bank, _, _ = toy
    device = device_preset("reram_wan2022")
    analog = convert_to_analog(model, device, seed=0)
    program(analog)
    return analog, program_bank(analog, bank, device, seed=0)


# --- (1) zero writes -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "settings"), CASES)
def test_no_cell_is_written_and_conductances_stay_bit_for_bit(reram, toy, method: str, settings: dict) -> None:
    analog, programmed = reram
    x, y = toy[2][:12], toy[3][:12]
    before = snapshot(analog)
    for arrays in programmed.layers.values():
        before.update({**snapshot(arrays.a), **snapshot(arrays.b)})
    ledger = Ledger()
    result = adapt(method, analog, programmed, (x, y), config(method, epochs=1, batch_size=4, **settings),
                   ledger=ledger, task="t", seed=3, progress=False)  # fmt: skip
    assert ledger.cell_write_pulses(phase="adapt") == 0 == result.cell_write_pulses
    events = ledger.group_by("event", field="count", phase="adapt")
    for event in ("cell_read", "digital_mult", "digital_add", "sram_read", "sram_write"):
        assert events.get((event,), 0) > 0, event
    after = snapshot(result.model)
    assert after.keys() == before.keys() and len(after) == 6 + 8  # 6 base layers, 8 bank arrays (q, v of 2 blocks)
    assert all(after[name] == before[name] for name in before)
    assert any(isinstance(m, (MixedLinear, GatedLinear)) for m in result.model.modules())


@hyp_settings(max_examples=5, deadline=None)
@given(
    n_entries=st.integers(1, 3),
    rank=st.integers(1, 3),
    method=st.sampled_from(["fusion_rank", "fusion_core", "fusion_gate"]),
    share=st.sampled_from(["layer", "block", "global"]),
    magnitudes=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_finer_mixes_never_write(n_entries, rank, method, share, magnitudes, seed) -> None:
    """Whatever the bank's size and rank, the sharing and the seed, no write pulse and no changed cell."""
    model = ToyNet(seed=seed % 7)
    bank = random_bank(model, n_entries=n_entries, rank=rank, alpha=2.0 * rank, seed=seed)
    device = device_preset("reram_wan2022")
    analog = convert_to_analog(model, device, seed=seed)
    program(analog)
    programmed = program_bank(analog, bank, device, seed=seed)
    before = {name: state for arrays in programmed.layers.values() for array in (arrays.a, arrays.b)
              for name, state in snapshot(array).items()}  # fmt: skip
    x, y = toy_task(model, bank, torch.ones(n_entries), 8, seed=seed)
    settings = {"share": share} if method == "fusion_gate" else {"share": share, "magnitudes": magnitudes}
    ledger = Ledger()
    result = adapt(method, analog, programmed, (x, y), config(method, epochs=1, batch_size=4, **settings),
                   ledger=ledger, task="p", seed=seed, progress=False)  # fmt: skip
    assert ledger.cell_write_pulses(phase="adapt") == 0 == result.cell_write_pulses
    after = snapshot(result.model)
    assert all(after[name] == state for name, state in before.items())


# --- (2) the forward against its equation ----------------------------------------------------------------------
@pytest.mark.parametrize("mix", ["rank", "core"])
@pytest.mark.parametrize("magnitudes", [True, False])
def test_mixed_forward_and_gradients_match_the_dense_equation(ideal, mix: str, magnitudes: bool) -> None:
    analog, programmed = ideal
    model = copy.deepcopy(analog)
    generator = torch.Generator().manual_seed(5)
    x_model, x = torch.randn(6, 12, generator=generator), torch.randn(6, 16, generator=generator)
    start = model(x_model)
    mixed = attach_mixing(model, programmed, mix=mix, use_magnitude=magnitudes)
    torch.testing.assert_close(model(x_model), start, rtol=1e-4, atol=1e-5)  # zero mix: the zero-shot model
    with torch.no_grad():
        for parameter in mixed.mixer_parameters():
            parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator))
        for magnitude in mixed.magnitudes():
            magnitude.mul_(1 + 0.1 * torch.randn(magnitude.shape, generator=generator))
    scale = programmed.alpha / programmed.rank
    for layer in mixed.layers.values():
        w0, a, b = (read_weight(m) for m in (layer.base, layer.bank_a, layer.bank_b))
        mix_value = layer.coefficients.detach().clone().requires_grad_(True)
        matrix = torch.diag(mix_value) if mix == "rank" else mix_value  # y = W0 x + s B_stack M A_stack x
        delta = scale * b @ matrix @ a
        weight = w0 + delta
        m_value = None
        if magnitudes:
            m_value = layer.magnitude.detach().clone().requires_grad_(True)
            norm = torch.linalg.vector_norm(weight, dim=1)
            torch.testing.assert_close(layer.row_norm(), norm.detach(), rtol=1e-4, atol=1e-5)
            weight = (m_value / norm.detach())[:, None] * weight
        expected = x @ weight.T + layer.base.bias.detach()
        out = layer(x)
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
        probe = torch.randn(out.shape, generator=generator)
        (expected * probe).sum().backward()
        layer.coefficients.grad = None
        (out * probe).sum().backward()
        torch.testing.assert_close(layer.coefficients.grad, mix_value.grad, rtol=1e-3, atol=1e-4)
        if magnitudes:
            torch.testing.assert_close(layer.magnitude.grad, m_value.grad, rtol=1e-3, atol=1e-4)


def test_core_norms_follow_the_cells_and_are_read_again_after_drift(reram) -> None:
    """On a non-ideal array the norms come from what the cells hold; after drift `recalibrate` (which the runner
    calls for layers with magnitudes) reads them again, without writes."""
    model, programmed = copy.deepcopy(reram)
    layer = attach_mixing(model, programmed, mix="core").layers["blocks.1.v"]
    with torch.no_grad():
        layer.coefficients.copy_(0.3 * torch.randn(N * R, N * R, generator=torch.Generator().manual_seed(2)))

    def direct_norm() -> torch.Tensor:
        w0, a, b = (read_weight(m) for m in (layer.base, layer.bank_a, layer.bank_b))
        return torch.linalg.vector_norm(w0 + layer.scale * b @ layer.coefficients.detach() @ a, dim=1)

    torch.testing.assert_close(layer.row_norm(), direct_norm(), rtol=1e-4, atol=1e-5)
    for module in model.modules():
        if isinstance(module, AnalogLinear):
            module.drift_to(30 * 86_400.0)
    assert not torch.allclose(layer.row_norm(), direct_norm(), rtol=1e-4, atol=1e-5)
    ledger = Ledger()
    layer.recalibrate(ledger.scope(phase="calibration"))
    torch.testing.assert_close(layer.row_norm(), direct_norm(), rtol=1e-4, atol=1e-5)
    assert ledger.total("count", event="cell_read") > 0 and ledger.cell_write_pulses() == 0


@pytest.mark.parametrize(("activation", "pool"), [("softmax", "vector"), ("sigmoid", "sequence")])
def test_gate_forward_matches_the_dense_equation(ideal, activation: str, pool: str) -> None:
    analog, programmed = ideal
    model = copy.deepcopy(analog)
    generator = torch.Generator().manual_seed(6)
    x_model, x = torch.randn(3, 5, 12, generator=generator), torch.randn(3, 5, 16, generator=generator)
    start = model(x_model)  # inputs (batch, sequence, width)
    gated = attach_gate(model, programmed, activation=activation, pool=pool, sharing="block" if pool == "sequence"
                        else "layer")  # fmt: skip
    torch.testing.assert_close(model(x_model), start, rtol=1e-4, atol=1e-5)  # zero_shot start: amplitude 0
    with torch.no_grad():
        for parameter in gated.mixer_parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    scale = programmed.alpha / programmed.rank
    for layer in gated.layers.values():
        w0, a, b = (read_weight(m) for m in (layer.base, layer.bank_a, layer.bank_b))
        gate = layer.gate
        x_bar = x.mean(dim=1, keepdim=True) if pool == "sequence" else x
        logits = x_bar @ gate.weight.detach().T + gate.bias.detach()
        act = torch.softmax(logits, dim=-1) if activation == "softmax" else torch.sigmoid(logits)
        c = gate.amplitude.detach() * act  # c(x) = lambda * act(G x_bar + g)
        lora = sum(c[..., i : i + 1] * (x @ a[i * R : (i + 1) * R].T @ b[:, i * R : (i + 1) * R].T) for i in range(N))
        expected = x @ w0.T + scale * lora + layer.base.bias.detach()
        torch.testing.assert_close(layer(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_uniform_gate_starts_at_the_mean_of_the_bank(activation: str) -> None:
    gate = CoefficientGate(N, 16, activation, "vector", "uniform")
    torch.testing.assert_close(gate(torch.randn(4, 16)), torch.full((4, N), 1 / N))
    assert gate.size == N * 16 + N + 1


# --- (3, 4) digital state and trainable values -----------------------------------------------------------------
@pytest.mark.parametrize(("method", "settings"), CASES)
@pytest.mark.parametrize("storage", ["readout", "on_demand"])
def test_trainable_and_digital_state_follow_the_formulas(toy, method: str, settings: dict, storage: str) -> None:
    model, bank, x, y = toy
    programmed = program_bank(model, bank, None, calibrate_norms=False)
    calibrate_norms(model, programmed, None, storage=storage)
    result = adapt(method, model, programmed, (x[:10], y[:10]), config(method, epochs=1, batch_size=5, **settings),
                   seed=0, val_fraction=0.0, progress=False)  # fmt: skip
    trainable, calibration = expected_counts(method, settings, bank.layer_shapes(), storage)
    assert result.trainable_params == trainable
    state = digital_state(result.model, result.trainable_params, gradient_based=True)
    assert (state.kept, state.calibration) == (trainable, calibration)
    assert state.words == trainable + calibration
    assert state.adapt_words == 4 * trainable + calibration


def test_the_toy_counts_by_hand() -> None:
    """The formulas at the toy sizes (N 3, r 2, four 16 x 16 layers in 2 blocks), written out once."""
    shapes = random_bank(ToyNet(), n_entries=N, rank=R).layer_shapes()
    assert expected_counts("fusion_rank", {}, shapes) == (4 * 6 + 64, 4 * (16 + 2 * 16 * 6 + 36))
    assert expected_counts("fusion_core", {"share": "block", "magnitudes": False}, shapes) == (2 * 36, 0)
    assert expected_counts("fusion_gate", {"share": "global"}, shapes) == (3 * 16 + 3 + 1, 0)


# --- (5) training ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["fusion_rank", "fusion_core", "fusion_gate"])
def test_training_lowers_the_loss(toy, method: str) -> None:
    model, bank, x, y = toy
    programmed = program_bank(model, bank, None)
    result = adapt(method, model, programmed, (x, y), config(method, epochs=6, batch_size=10), seed=0,
                   val_fraction=0.0, progress=False)  # fmt: skip
    before, after = evaluate_loss(model, x, y), evaluate_loss(result.model, x, y)
    assert after < 0.8 * before, (before, after)
    assert sum(result.train_losses[-5:]) < sum(result.train_losses[:5])


# --- pricing, refusals ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mix", ["rank", "core", "gate"])
def test_inference_prices_the_mix_per_vector(toy, mix: str) -> None:
    model, bank, x, _ = toy
    model = copy.deepcopy(model)
    programmed = program_bank(model, bank, None)
    if mix == "gate":
        attach_gate(model, programmed)
    else:
        attach_mixing(model, programmed, mix=mix, use_magnitude=False)
    ledger = Ledger()
    with torch.no_grad(), record_all_to(model, ledger.scope(phase="inference")):
        model(x[:3])
    count = {e: ledger.total("count", event=e, layer="blocks.0.q") for e in ("digital_mult", "digital_add",
                                                                           "sram_read")}  # fmt: skip
    width, d = N * R, 16
    per_vector = {  # (mults, adds, SRAM reads): the mix, s * v, the add to W0 x and the bias
        "rank": (width + d, 2 * d, width + d),
        "core": (width * width + d, width * width + 2 * d, width * width + d),
        "gate": (N * d + 3 * N + width + d, N * d + N + 2 * d, N * d + N + 1 + d),
    }[mix]
    assert (count["digital_mult"], count["digital_add"], count["sram_read"]) == tuple(3 * v for v in per_vector)


def test_mismatched_parts_and_peft_export_are_refused(ideal, toy) -> None:
    analog, programmed = ideal
    arrays = programmed.layers["blocks.0.q"]
    base = analog.get_submodule("blocks.0.q")
    with pytest.raises(ValueError, match=r"coefficients must be an nn.Parameter of shape \(6,\)"):
        MixedLinear(base, arrays.a, arrays.b, n_entries=N, rank=R, alpha=4.0,
                    coefficients=torch.nn.Parameter(torch.zeros(5)), form="linear", use_magnitude=False)  # fmt: skip
    with pytest.raises(ValueError, match="needs a CoefficientGate of 3 entries on 16 inputs"):
        GatedLinear(base, arrays.a, arrays.b, n_entries=N, rank=R, alpha=4.0,
                    gate=CoefficientGate(N, 8, "softmax", "vector", "zero_shot"))  # fmt: skip
    with pytest.raises(ValueError, match="activation must be one of"):
        CoefficientGate(N, 16, "relu", "vector", "zero_shot")
    model = copy.deepcopy(analog)
    attach_mixing(model, programmed, mix="core", use_magnitude=False)
    with pytest.raises(ValueError, match="is a MixedLinear: only fusion's and lorahub's layers"):
        export_fused_peft(model, toy[1], Path("unused"))


# --- the CLI -----------------------------------------------------------------------------------------------------
def _lorafusion_line() -> dict:
    """The one YAML line `fusion`'s docstring gives for LoRAFusion's setting."""
    (line,) = [ln.strip() for ln in METHODS["fusion"].train.__doc__.splitlines() if ln.strip().startswith("- {")]
    (entry,) = yaml.safe_load(line)
    return entry


SCENARIO = {
    "name": "beyond",
    "seed": 0,
    "device": {"preset": "ideal"},
    "model": {"d_model": 8, "n_blocks": 1, "n_heads": 2, "d_ff": 8, "patch_size": 2, "base_epochs": 2,
              "batch_size": 16},
    "tasks": {"family": "digits", "base": "clean", "sources": ["rotate_+30", "invert"], "targets": ["blur"],
              "base_train_size": 64, "few_shot_train": 10, "few_shot_val": 2, "test_size": 30},
    "bank": {"rank": 2, "alpha": 4.0, "epochs": 1, "train_size": 16},
    "methods": [{"name": "zero_shot"}, {"name": "fusion_rank", "epochs": 2},
                {"name": "fusion_core", "epochs": 2, "magnitudes": False},
                {"name": "fusion_gate", "epochs": 2, "share": "block", "pool": "sequence"},
                {**_lorafusion_line(), "epochs": 2}],
    "outputs": {"plots": False},
}  # fmt: skip


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "scenarios", *args], capture_output=True, text=True, timeout=300,
                          env=env)  # fmt: skip


def test_the_methods_run_from_yaml_through_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "beyond.yaml"
    path.write_text(yaml.safe_dump(SCENARIO))
    result = _cli("run", str(path), "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert set(metrics["method"]) == {"zero_shot", "fusion_rank", "fusion_core", "fusion_gate", "lorafusion"}
    assert (metrics["cell_write_pulses"] == 0).all()
    # q and v (8 x 8) of one block, N = 2 sources, r = 2: the docstrings' counts.
    cal = 2 * (8 + 2 * 8 * 4 + 16)
    expected = {"fusion_rank": (2 * 4 + 16, 2 * 4 + 16 + cal), "fusion_core": (2 * 16, 2 * 16),
                "fusion_gate": (2 * 8 + 2 + 1, 2 * 8 + 2 + 1), "lorafusion": (2 + 16, 2 + 16 + cal)}  # fmt: skip
    for method, (trainable, words) in expected.items():
        row = metrics[metrics["method"] == method].iloc[0]
        assert (row["trainable_params"], row["digital_state_words"]) == (trainable, words), method


def test_the_schema_derives_from_the_configs(tmp_path: Path) -> None:
    path = tmp_path / "beyond.yaml"
    path.write_text(yaml.safe_dump(SCENARIO))
    configs = {spec.key: spec.config() for spec in load_scenario(str(path)).methods}
    assert configs["fusion_gate"] == FusionGateConfig(epochs=2, share="block", pool="sequence")
    assert configs["lorafusion"] == FusionConfig(epochs=2, share="block", form="lorahub", magnitude=True)
    for entry, message in [
        ({"name": "fusion_gate", "activation": "relu"}, "methods[0].activation: got 'relu'"),
        ({"name": "fusion_core", "core_lr": 0}, "methods[0].core_lr: got 0, expected > 0"),
        ({"name": "fusion_rank", "magnitude": True}, "methods[0].magnitude: unknown key"),
    ]:
        path.write_text(yaml.safe_dump({**SCENARIO, "methods": [entry]}))
        with pytest.raises(ScenarioError, match=re.escape(message)):
            load_scenario(str(path))
