"""Non-idealities as plug-ins (`crossbar.nonideal`): a drift model from a file outside the packages runs through
`crossbar-sim run`; programming- and read-noise models plug in the same way; an unknown model fails loudly in
`DeviceConfig` validation and in the kernel dispatch; every built-in names its twin and its fidelity rows."""

from __future__ import annotations

import ast
import math
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest
from naive_programming import apply_drift_np
from test_plugins import PLUGIN, _cli, _write
from test_plugins import SCENARIO as PLUGGED

from crossbar import DeviceConfig, device_preset
from crossbar.kernels import drift_kernel
from crossbar.mapping import Targets
from crossbar.mvm import MvmSettings
from crossbar.noise import apply_drift, drift_step
from crossbar.nonideal import (
    DRIFT_MODELS,
    PROGRAMMING_NOISE_MODELS,
    READ_NOISE_MODELS,
    DriftModel,
    ProgrammingNoiseModel,
    ReadNoiseModel,
    ReadNoiseParams,
)
from crossbar.programming import program_state
from crossbar.rng import DOMAIN_DRIFT, NORMAL_TABLE, domain_key
from crossbar.state import STUCK, ArrayState, kernel_views
from scenarios.plugins import load_plugins

ROOT = Path(__file__).resolve().parents[1]
DRIFT_PLUGIN = PLUGIN.parent / "log_drift_plugin.py"
SCENARIO = {
    **PLUGGED,
    "name": "drifting",
    "plugins": [str(PLUGIN), str(DRIFT_PLUGIN)],  # the bars task family, and the drift model
    "device": {"preset": "ideal", "overrides": {"drift_model": "log_toy"}},
    "model": {**PLUGGED["model"], "base_epochs": 15},  # a base model that drift can make worse
    "methods": [{"name": "zero_shot"}],
    "evaluate": {"drift_times_s": [0, 3600]},
}


# --- a drift model from outside the packages -----------------------------------------------------------------
def test_external_drift_model_runs_through_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = _cli("run", str(_write(tmp_path, SCENARIO)), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = pd.read_csv(out / "metrics.csv")
    fresh = metrics[metrics["drift_s"] == 0]
    drifted = metrics[metrics["drift_s"] == 3600]
    assert len(fresh) == len(drifted) == 1
    assert drifted["accuracy"].iloc[0] != fresh["accuracy"].iloc[0]  # the ideal preset drifts by the toy only


def test_without_the_plugin_the_drift_model_is_unknown_in_one_line(tmp_path: Path) -> None:
    scenario = {**SCENARIO, "plugins": [str(PLUGIN)]}
    result = _cli("validate", str(_write(tmp_path, scenario)))
    assert result.returncode == 2
    error = result.stderr.strip()
    assert len(error.splitlines()) == 1, error
    assert "device.overrides.drift_model" in error and "'log_toy'" in error
    assert "['cmo_hfox', 'none', 'wan2022']" in error


def _plugin_state(d_in: int = 37, d_out: int = 9, seed: int = 0) -> tuple[DeviceConfig, ArrayState]:
    load_plugins([str(DRIFT_PLUGIN)])
    device = device_preset("reram_wan2022", drift_model="log_toy", tile_rows=16)
    rng = np.random.default_rng(seed)
    state = ArrayState.fresh(d_in, d_out, device)
    real = state.valid_rows()
    state.g_neg_us[...] = np.where(real, rng.uniform(5, 35, state.g_neg_us.shape), 0).astype(np.float32)
    state.g_diff_us[...] = np.where(real, rng.uniform(-5, 5, state.g_diff_us.shape), 0).astype(np.float32)
    state.writes_pos[rng.random(state.writes_pos.shape) < 0.1] = STUCK
    return device, state


def test_plugin_drift_model_matches_its_twin() -> None:
    device, state = _plugin_state()
    twin = state.copy()
    apply_drift(state, device, t_from_s=10.0, t_to_s=1e4, seed=3, stream=1)
    _, step = drift_step(device, 10.0, 1e4)
    assert step.decades == pytest.approx(3.0)
    apply_drift_np(twin, device, t_from_s=10.0, t_to_s=1e4, seed=3, stream=1)
    for name in ("g_diff_us", "g_neg_us", "writes_pos", "writes_neg"):
        np.testing.assert_array_equal(getattr(state, name), getattr(twin, name), err_msg=name)


def test_plugin_drift_model_moves_cells_by_its_moments() -> None:
    device, state = _plugin_state(256, 64)
    before = state.copy()
    apply_drift(state, device, t_from_s=0.0, t_to_s=100.0, seed=1, stream=0)  # 2 decades
    real = before.valid_rows()[..., 0]
    g0 = before.g_neg_us[real].astype(np.float64)
    moved = state.g_neg_us[real] - g0 + 1.0  # mean -0.5 uS per decade; no clamp hit (G- >= 5 uS)
    active = before.g_diff_us[real] < 0  # G- is the larger cell: its reference is its own conductance
    z = moved[active] / (0.2 * g0[active])  # sigma 0.1 G_ref per decade
    assert abs(z.mean()) < 4 / math.sqrt(z.size)
    assert z.std() == pytest.approx(1.0, rel=0.03)
    np.testing.assert_allclose(moved[~active], 0.0, atol=1e-5)  # idle cells: reference g_min = 0, sigma 0


class _Step(NamedTuple):
    decades: float


def test_plugin_drift_model_with_bad_output_fails_in_one_line() -> None:
    DRIFT_MODELS.register(DriftModel("negative_sigma", "a broken test model", lambda d, a, b: _Step(1.0),
                                     cell_moments=lambda g, step, d: (0.0, -np.ones_like(g))))  # fmt: skip
    DRIFT_MODELS.register(DriftModel("no_record", "a broken test model", lambda d, a, b: (1.0,),
                                     cell_moments=lambda g, step, d: (0.0, g)))  # fmt: skip
    device, state = _plugin_state()
    for name, message in (("negative_sigma", "cell_moments gave a non-finite mean or a negative sigma"),
                          ("no_record", "step must return a NamedTuple of numbers")):  # fmt: skip
        with pytest.raises(ValueError, match=f"drift model '{name}': {message}"):
            apply_drift(state, device.replace(drift_model=name), t_from_s=0.0, t_to_s=10.0, seed=0, stream=0)


# --- unknown models fail loudly ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "registry"),
    [("drift_model", DRIFT_MODELS), ("programming_noise", PROGRAMMING_NOISE_MODELS),
     ("read_noise_model", READ_NOISE_MODELS)],
)  # fmt: skip
def test_unknown_model_names_fail_device_validation(field: str, registry) -> None:
    with pytest.raises(ValueError) as raised:
        device_preset("ideal", **{field: "no_such_model"})
    message = str(raised.value)
    assert len(message.splitlines()) == 1
    assert f"DeviceConfig.{field}" in message and "'no_such_model'" in message
    assert str(registry.names()) in message


def test_unknown_kernel_id_is_an_error_in_the_kernel_and_the_registry() -> None:
    device, state = _plugin_state()
    views = kernel_views(state, device)
    with pytest.raises(ValueError, match="unknown drift model id"):
        drift_kernel(views, np.zeros((3, *views[0].shape), np.float32), state.d_in, 0.0, 40.0, 0.0, 7, np.zeros(8),
                     np.zeros((1, 1)), np.zeros((4, 1, 1)), domain_key(0, 0, DOMAIN_DRIFT), NORMAL_TABLE)  # fmt: skip
    with pytest.raises(ValueError, match="kernel_id must be one of"):
        DriftModel("bad_id", "a test", lambda d, a, b: None, kernel_id=7)
    forced = device_preset("ideal", tile_rows=8)  # a copy: the preset itself stays as it is
    object.__setattr__(forced, "drift_model", "forced_name")  # bypasses validation, as a corrupted config could
    with pytest.raises(ValueError, match="unknown drift model 'forced_name'; registered: cmo_hfox"):
        apply_drift(ArrayState.fresh(4, 4, forced), forced, t_from_s=0.0, t_to_s=10.0, seed=0, stream=0)


def test_registry_refuses_a_second_model_under_a_taken_name() -> None:
    wan = DRIFT_MODELS["wan2022"]
    DRIFT_MODELS.register(wan)  # the same definition again: a plugin imported twice
    with pytest.raises(ValueError, match="drift model 'wan2022' is already registered"):
        DRIFT_MODELS.register(DriftModel("wan2022", "another model", lambda d, a, b: None, kernel_id=1))
    with pytest.raises(ValueError, match="source must say"):
        DRIFT_MODELS.register(DriftModel("unsourced", " ", None))


# --- programming- and read-noise plug-ins ---------------------------------------------------------------------
def test_plugin_programming_noise_model_sets_the_residual() -> None:
    PROGRAMMING_NOISE_MODELS.register(ProgrammingNoiseModel("flat_1us", (1.0,), False, "a test: sigma = 1 uS"))
    device = device_preset("reram_wan2022", programming_noise="flat_1us", programming_mode="statistical")
    state = ArrayState.fresh(200, 50, device)
    shape = state.g_diff_us.shape
    targets = Targets(np.full(shape, 20.0, np.float32), np.full(shape, 0.0, np.float32), np.ones(50, np.float32))
    program_state(state, targets, device, seed=0, stream=0)
    error = state.g_pos_us().astype(np.float64)[state.valid_rows()[..., 0]] - 20.0
    assert error.std() == pytest.approx(1.0, rel=0.05)


def test_plugin_read_noise_model_sets_the_mvm_sigmas() -> None:
    READ_NOISE_MODELS.register(ReadNoiseModel("doubled", "a test", lambda d: ReadNoiseParams(2.0, 0.5)))
    settings = MvmSettings.from_device(device_preset("reram_wan2022", read_noise_model="doubled"))
    assert (settings.sigma_us, settings.out_noise_us) == (2.0, 0.5)
    gaussian = MvmSettings.from_device(device_preset("reram_wan2022"))
    assert gaussian.sigma_us == pytest.approx(math.sqrt(2.0) * 0.01 / math.sqrt(2.0) * 40.0)


# --- every built-in names its twin and its fidelity rows ------------------------------------------------------
def _builtins() -> list[object]:
    return [registry[name] for registry in (DRIFT_MODELS, PROGRAMMING_NOISE_MODELS, READ_NOISE_MODELS)
            for name in ("none", "wan2022", "milo2021", "cmo_hfox", "gaussian") if name in registry]  # fmt: skip


def test_builtin_twins_exist() -> None:
    for entry in _builtins():
        path, function = entry.twin.split("::")
        tree = ast.parse((ROOT / path).read_text())
        assert function in {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}, entry.twin


def test_builtin_fidelity_rows_exist() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import fidelity

    rows = [*fidelity.sigma_rows(4, 4), *fidelity.weight_error_rows(4, 8), *fidelity.drift_rows(4, 4),
            *fidelity.read_noise_rows(20)]  # fmt: skip
    groups = {row.group for row in rows}
    for entry in _builtins():
        assert set(entry.fidelity_rows) <= groups, (entry.name, set(entry.fidelity_rows) - groups)
    assert any(entry.fidelity_rows for entry in _builtins())
