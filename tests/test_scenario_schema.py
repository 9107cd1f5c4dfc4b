from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import scenarios.runner
from scenarios.cli import main
from scenarios.loading import bundled_scenarios, load_scenario
from scenarios.schema import Scenario, ScenarioError

TINY = yaml.safe_load((Path(__file__).parents[1] / "scenarios" / "tiny.yaml").read_text())


def _tiny_with(**changes: object) -> dict:
    """The tiny scenario as a dict, with top-level sections replaced or (for dict values) updated."""
    data = yaml.safe_load(yaml.safe_dump(TINY))
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    return data


def _write_npz(path: Path, drop: str | None = None, **replace: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.normal(size=(40, 8, 8)).astype(np.float32),
        "y_train": rng.integers(0, 3, 40),
        "x_test": rng.normal(size=(10, 8, 8)).astype(np.float32),
        "y_test": rng.integers(0, 3, 10),
    }
    arrays.update(replace)
    arrays.pop(drop, None)
    np.savez(path, **arrays)
    return path


def _npz_scenario(folder: Path, target_file: str = "d.npz") -> dict:
    for name in ("a", "b", "c", "d"):
        _write_npz(folder / f"{name}.npz")
    npz = {"a": "a.npz", "b": "b.npz", "c": "c.npz", "t": target_file}
    tasks = {"family": "npz", "base": "a", "sources": ["b", "c"], "targets": ["t"], "few_shot_train": 20, "npz": npz}
    return _tiny_with(tasks=tasks)


# Each case: (id, file content: a dict to dump as YAML, raw text, or a callable building the file; extra CLI args;
# a fragment the one-line message must contain).
BAD_CASES = [
    ("unknown_top_key", _tiny_with(colour="red"), [], "colour: unknown key"),
    ("unknown_nested_key", _tiny_with(bank={"rnak": 4}), [], "bank.rnak: unknown key"),
    ("wrong_type", _tiny_with(bank={"rank": "four"}), [], "bank.rank: got 'four', expected an integer"),
    ("float_for_int", _tiny_with(model={"d_model": 32.5}), [], "model.d_model: got 32.5"),
    ("negative_size", _tiny_with(tasks={"test_size": -5}), [], "tasks.test_size: got -5, expected >= 1"),
    ("negative_seed", _tiny_with(seed=-1), [], "seed: got -1"),
    ("unknown_device_preset", _tiny_with(device={"preset": "memristor9000"}), [], "device.preset: got 'memristor9000'"),
    ("unknown_cost_preset", _tiny_with(costs={"preset": "cheap"}), [], "costs.preset: got 'cheap'"),
    (
        "bad_cost_override",
        _tiny_with(costs={"overrides": {"write_pulse_pj": -2.0}}),
        [],
        "costs.overrides.write_pulse_pj",
    ),
    ("unknown_method", _tiny_with(methods=[{"name": "magic"}]), [], "methods[0].name: got 'magic'"),
    ("method_without_name", _tiny_with(methods=[{"epochs": 3}]), [], "methods[0]: no `name` key"),
    ("unknown_method_key", _tiny_with(methods=[{"name": "fusion", "epoch": 3}]), [], "did you mean 'epochs'"),
    ("bad_method_setting", _tiny_with(methods=[{"name": "fusion", "form": "cubic"}]), [], "methods[0].form"),
    ("duplicate_method", _tiny_with(methods=[{"name": "fusion"}, {"name": "fusion"}]), [], "methods[1]"),
    ("missing_file", None, [], "no such file"),
    ("empty_file", "", [], "the file is empty"),
    ("comments_only", "# nothing here\n", [], "the file is empty"),
    ("not_yaml", "name: [unclosed\nseed: 0\n", [], "not valid YAML at line"),
    ("yaml_list", "- name: tiny\n- seed: 0\n", [], "got a YAML list at the top level"),
    ("yaml_scalar", "just a sentence\n", [], "got a YAML str value at the top level"),
    ("duplicate_yaml_key", "seed: 1\nseed: 2\n", [], "duplicate key 'seed'"),
    ("inconsistent_rank", _tiny_with(bank={"rank": 4096}), [], "bank.rank: got 4096, expected <= 32"),
    ("rank_vs_d_ff", _tiny_with(model={"d_ff": 2}, bank={"target_modules": ["fc1"], "rank": 4}), [], "expected <= 2"),
    ("overlapping_source_target", _tiny_with(tasks={"targets": ["blur"]}), [], "tasks.targets[0]: got 'blur'"),
    ("unknown_task", _tiny_with(tasks={"sources": ["rotate_+31"]}), [], "did you mean 'rotate_+30'"),
    ("heads_do_not_divide", _tiny_with(model={"n_heads": 3}), [], "model.n_heads: got 3"),
    ("patch_does_not_divide", _tiny_with(model={"patch_size": 3}), [], "model.patch_size: got 3"),
    ("negative_drift_time", _tiny_with(evaluate={"drift_times_s": [0, -3600]}), [], "evaluate.drift_times_s[1]"),
    ("infinite_drift_time", _tiny_with(evaluate={"drift_times_s": [".inf"]}), [], "evaluate.drift_times_s[0]"),
    (
        "early_stop_without_val",
        _tiny_with(tasks={"few_shot_val": 0}, methods=[{"name": "fusion", "early_stopping": True}]),
        [],
        "methods[0].early_stopping",
    ),  # fmt: skip
    ("bad_set_syntax", TINY, ["--set", "bank.rank"], "bad syntax, expected key.path=value"),
    ("set_unknown_path", TINY, ["--set", "bank.rnk=3"], "bank.rnk: unknown key"),
    ("set_unknown_section", TINY, ["--set", "trainer.lr=3"], "trainer: unknown key"),
    ("set_into_scalar", TINY, ["--set", "seed.value=3"], "seed is 0, expected a mapping or a list"),
    ("set_bad_index", TINY, ["--set", "methods.17.epochs=3"], "expected an index 0..5"),
    ("set_bad_value", TINY, ["--set", "bank.rank=[1"], "the value is not valid YAML"),
    ("set_out_of_range", TINY, ["--set", "evaluate.repeats=0"], "evaluate.repeats: got 0, expected >= 1"),
    (
        "npz_missing_key",
        lambda folder: _npz_scenario(folder, _write_npz(folder / "bad.npz", drop="y_test").name),
        [],
        "tasks.npz.t: bad.npz: missing array(s) y_test",
    ),  # fmt: skip
    (
        "npz_bad_labels",
        lambda folder: _npz_scenario(folder, _write_npz(folder / "bad.npz", y_test=np.full(10, 9)).name),
        [],
        "bad.npz: y_test has label 9, expected labels in [0, 3)",
    ),  # fmt: skip
    ("npz_missing_file", lambda folder: _npz_scenario(folder, "absent.npz"), [], "absent.npz: file not found"),
    # each model kind and task family owns its keys (scenarios.registered): another's key says whose it is
    ("unknown_model_kind", _tiny_with(model={"kind": "rnn"}), [], "model.kind: got 'rnn', expected one of the model "
     "kinds: transformer, cnn, hf_encoder"),
    ("key_of_another_kind", _tiny_with(model={"kind": "cnn"}), [], "model.n_blocks: not used by kind cnn (a setting "
     "of transformer); remove it"),
    ("encoder_given_trained_keys", _tiny_with(model={"kind": "hf_encoder"}), [], "not used by kind hf_encoder (a "
     "setting of transformer, cnn); remove it"),
    ("npz_key_for_digits", _tiny_with(tasks={"npz": {"t": "t.npz"}}), [], "tasks.npz: not used by family digits (a "
     "setting of npz); remove it"),
    ("npz_without_files", _tiny_with(tasks={"family": "npz"}), [], "tasks.npz: required key is missing (Task name ->"),
    ("npz_empty_mapping", _tiny_with(tasks={"family": "npz", "npz": {}}), [], "tasks.npz: got a mapping {}, expected"),
]  # fmt: skip


def _materialise(tmp_path: Path, content: object) -> Path:
    path = tmp_path / "scenario.yaml"
    if content is None:
        return tmp_path / "does_not_exist.yaml"
    if callable(content):
        content = content(tmp_path)
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
    return path


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("crossbar-sim: error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("content", "args", "fragment"), [case[1:] for case in BAD_CASES], ids=[c[0] for c in BAD_CASES]
)
def test_bad_scenario_is_one_line_exit_2(tmp_path: Path, capsys, content, args, fragment) -> None:
    path = _materialise(tmp_path, content)
    out_dir = tmp_path / "run_out"
    for command in (["validate", str(path), *args], ["run", str(path), "--out", str(out_dir), *args]):
        with pytest.raises(SystemExit) as done:
            main(command)
        assert done.value.code == 2
        line = _one_error_line(capsys.readouterr().err)
        assert fragment in line
        assert not out_dir.exists()
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("content", "args", "fragment"),
    [
        (_tiny_with(bank={"rank": 4096}), [], "scenario.yaml: bank.rank: got 4096, expected <= 32"),
        ("- a\n", [], "got a YAML list"),
        (TINY, ["--set", "nonsense"], "bad syntax"),
        (TINY, ["--seed", "-3"], "seed: got -3, expected >= 0"),
    ],
    ids=["rank", "list", "set_syntax", "negative_seed_flag"],
)
def test_bad_scenario_in_a_subprocess(tmp_path: Path, content, args, fragment) -> None:
    path = _materialise(tmp_path, content)
    out_dir = tmp_path / "run_out"
    result = subprocess.run(
        [sys.executable, "-m", "scenarios", "run", str(path), "--out", str(out_dir), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert fragment in _one_error_line(result.stderr)
    assert not out_dir.exists() and not (tmp_path / "runs").exists()


def test_error_message_format_names_file_path_value_and_expectation(tmp_path: Path) -> None:
    path = _materialise(tmp_path, _tiny_with(bank={"rank": 4096}))
    with pytest.raises(ScenarioError) as caught:
        load_scenario(str(path))
    assert str(caught.value) == "scenario.yaml: bank.rank: got 4096, expected <= 32 (the smallest adapted layer width)"
    assert isinstance(caught.value, ValueError)


def test_several_problems_report_the_first_and_count_the_rest(tmp_path: Path) -> None:
    path = _materialise(tmp_path, _tiny_with(seed="x", bank={"rank": "y", "epochs": "z"}))
    with pytest.raises(ScenarioError, match=r"seed: got 'x', expected an integer \(and 2 more problems\)$"):
        load_scenario(str(path))


def test_bundled_scenarios_validate() -> None:
    assert {"multitask", "tiny"} <= set(bundled_scenarios())
    multitask = load_scenario("multitask")
    assert multitask.name == "multitask" and len(multitask.tasks.sources) == 8 and len(multitask.tasks.targets) == 4
    assert multitask.tasks.test_size >= 1000 and multitask.tasks.few_shot_train + multitask.tasks.few_shot_val == 100
    assert multitask.source_path == bundled_scenarios()["multitask"].resolve()
    assert load_scenario("tiny.yaml").name == "tiny"


def test_validate_prints_one_ok_line(capsys) -> None:
    main(["validate", "tiny", "--set", "bank.rank=3"])
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("OK: scenario 'tiny'") and "3 source tasks" in out[0]
    assert len(out) == 8 and all(line.startswith("estimate ") for line in out[1:])  # scenarios.budget, per phase


def test_overrides_by_path_index_and_method_name() -> None:
    scenario = load_scenario(
        "tiny",
        [
            "bank.rank=3",
            "methods.fusion.epochs=7",
            "methods[2].lr=0.02",
            "tasks.targets=[rotate_-45, blur_shift]",
            "evaluate.drift_times_s=[0, 60]",
            "outputs.plots=false",
        ],
    )
    assert scenario.bank.rank == 3
    assert scenario.methods[1].epochs == 7 and scenario.methods[2].lr == 0.02
    assert scenario.tasks.targets == ["rotate_-45", "blur_shift"]
    assert scenario.evaluate.drift_times_s == [0.0, 60.0] and scenario.outputs.plots is False


def test_defaults_fill_a_minimal_file(tmp_path: Path) -> None:
    path = tmp_path / "minimal study.yaml"
    path.write_text("tasks: {sources: [blur], targets: [shift]}\nmethods: [{name: fusion}]\n")
    scenario = load_scenario(str(path))
    assert scenario.name == "minimal_study"  # from the file name, made safe for a directory name
    fusion = scenario.methods[0]
    assert (fusion.epochs, fusion.coefficient_lr, fusion.magnitude_lr, fusion.l1) == (20, 0.01, 0.005, 0.0005)
    assert scenario.tasks.few_shot_train == 95 and scenario.tasks.few_shot_val == 5
    assert scenario.bank.modules == ("q", "v")


def test_resolved_dict_round_trips() -> None:
    scenario = load_scenario("multitask", ["bank.target_modules=[all]"])
    resolved = scenario.resolved_dict()
    again = Scenario.model_validate(yaml.safe_load(yaml.safe_dump(resolved)))
    assert again.model_dump() == scenario.model_dump() and again.resolved_dict() == resolved
    assert scenario.bank.modules == ("q", "k", "v", "o", "fc1", "fc2")


def test_preset_registries_come_from_the_validation_context(tmp_path: Path) -> None:
    path = _materialise(tmp_path, _tiny_with(device={"preset": "lab_chip"}))
    from crossbar import device_preset

    context = {"device_presets": {"lab_chip": device_preset("ideal")}}
    assert load_scenario(str(path), context=context).device.preset == "lab_chip"
    with pytest.raises(ScenarioError, match="device.preset: got 'reram_wan2022', expected one of the device presets"):
        load_scenario("tiny", context=context)


def test_npz_paths_resolve_relative_to_the_scenario_file(tmp_path: Path, monkeypatch) -> None:
    data = _npz_scenario(tmp_path, "d.npz")
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.chdir(Path(__file__).parent)
    scenario = load_scenario(str(path))
    assert scenario.tasks.npz is not None and Path(scenario.tasks.npz["t"]) == (tmp_path / "d.npz").resolve()


def test_run_validates_then_calls_the_runner(tmp_path: Path, monkeypatch, capsys) -> None:
    calls = []

    def fake_run(study, out_dir, *, fresh=False, **options):
        calls.append((study, out_dir, fresh))
        return scenarios.runner.RunOutcome(out_dir, [out_dir])

    monkeypatch.setattr(scenarios.runner, "run_study", fake_run)
    main(["run", "tiny", "--out", str(tmp_path / "r"), "--seed", "7", "--set", "bank.rank=3", "--fresh", "--serial"])
    (study, out_dir, fresh), = calls  # fmt: skip
    scenario = study.scenario
    assert scenario.seed == 7 and scenario.bank.rank == 3 and fresh is True and out_dir == tmp_path / "r"
    assert str(tmp_path / "r") in capsys.readouterr().out


def test_model_kinds_derive_their_sections() -> None:
    """A kind's section has its settings' keys and defaults; its rules (scenarios.workload.ModelSettings.check)
    run with it, and an encoder's own bound applies."""
    from scenarios.schema import model_spec

    hf = model_spec("hf_encoder")
    assert hf is not None and set(hf.model_fields) == {"kind", "batch_size", "path", "package", "max_length"}
    assert hf(max_length=40).settings().max_length == 40
    with pytest.raises(ValueError, match="less than or equal to 512"):
        hf(max_length=600)
    with pytest.raises(ValueError, match="give either model.path or model.package"):
        hf(path="a", package="b")
    transformer = model_spec("transformer")
    assert transformer is not None and transformer().n_heads == 4 and model_spec("lstm") is None
    with pytest.raises(ValueError, match="a divisor of model.d_model=32"):
        transformer(d_model=32, n_heads=3)
