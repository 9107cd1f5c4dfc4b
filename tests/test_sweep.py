"""Sweep expansion and validation, seeds as a unit dimension, the content-addressed cache and the sweep summary
(no runs here: the end-to-end sweep is in test_scenario_run.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from scenarios.cache import CacheStore, ChecksumManifest, content_key
from scenarios.loading import ScenarioError, bundled_scenarios, load_study, parse_sweep_option
from scenarios.runner import _phase_parts
from scenarios.sweep import summarise_over_seeds


def _write(tmp_path: Path, sweep: dict, **top: object) -> Path:
    data = yaml.safe_load(bundled_scenarios()["tiny"].read_text())
    data.update(top)
    data["sweep"] = sweep
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_grid_times_zip_points_with_seeds_as_a_unit_dimension(tmp_path: Path) -> None:
    path = _write(tmp_path, {"grid": {"bank.rank": [1, 2], "seed": [3, 4]},
                             "zip": {"evaluate.repeats": [1, 2, 3], "methods.fusion.epochs": [1, 2, 3]}})  # fmt: skip
    study = load_study(str(path))
    assert study.keys == ["bank.rank", "evaluate.repeats", "methods.fusion.epochs"]
    assert [p.label for p in study.points] == [f"p{i:03d}" for i in range(6)]
    assert [p.values["bank.rank"] for p in study.points] == [1, 1, 1, 2, 2, 2]
    last = study.points[-1].scenario
    assert last.bank.rank == 2 and last.evaluate.repeats == 3
    assert next(m for m in last.methods if m.key == "fusion").epochs == 3
    assert all(p.scenario.seed_list == [3, 4] and p.scenario.sweep is None for p in study.points)
    assert last.for_seed(4).seed == 4 and last.for_seed(4).seed_list == [4]


def test_cli_sweep_options_join_the_grid_and_seeds_alone_make_one_point() -> None:
    study = load_study("tiny", [], ["device.overrides.read_noise_frac=0.005,0.02"])
    assert study.is_sweep and [p.scenario.device.overrides["read_noise_frac"] for p in study.points] == [0.005, 0.02]
    seeds_only = load_study("tiny", [], ["seed=[0, 1, 2]"])
    assert not seeds_only.is_sweep and seeds_only.points[0].scenario.seed_list == [0, 1, 2]
    assert parse_sweep_option("bank.rank=[2, 4]") == ("bank.rank", [2, 4])
    assert parse_sweep_option("methods[1].epochs=1,2") == ("methods.1.epochs", [1, 2])


def test_seed_count_and_list() -> None:
    assert load_study("tiny", ["seeds=3", "seed=5"]).scenario.seed_list == [5, 6, 7]
    with pytest.raises(ScenarioError, match=r"seeds\[1\]: got 1, expected no repeats"):
        load_study("tiny", ["seeds=[1, 1]"])


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ({"grid": {"bank.rnk": [1]}}, r"sweep point p000 \(bank.rnk=1\): bank.rnk: unknown key.*did you mean 'rank'"),
        ({"grid": {"bank.rank": [2, 999]}}, r"sweep point p001 \(bank.rank=999\): bank.rank: got 999, expected <="),
        ({"zip": {"bank.rank": [1, 2], "bank.alpha": [1.0]}}, r"sweep.zip: got .*, expected lists of one length"),
        ({"grid": {"bank.rank": []}}, r"sweep.grid.bank.rank: got \[\], expected a non-empty list"),
        ({"grid": {"name": ["x"]}}, r"sweep.grid.name: this key cannot be swept"),
        ({"grid": {"bank.rank": [1]}, "zip": {"bank.rank": [2]}}, r"sweep.zip.bank.rank: this key is also in"),
        ({"grdi": {}}, r"sweep.grdi: unknown key, expected one of: grid, zip"),
    ],
)
def test_bad_sweeps_are_one_line(tmp_path: Path, sweep: dict, message: str) -> None:
    with pytest.raises(ScenarioError, match=message) as caught:
        load_study(str(_write(tmp_path, sweep)))
    assert "\n" not in str(caught.value)


def test_bad_sweep_option_is_one_line() -> None:
    with pytest.raises(ScenarioError, match=r"--sweep 'bank.rank': bad syntax"):
        load_study("tiny", [], ["bank.rank"])


def test_content_keys_share_base_and_bank_across_device_settings() -> None:
    first, second = load_study("tiny", [], ["device.overrides.read_noise_frac=0.005,0.02"]).points
    a, b = _phase_parts(first.scenario), _phase_parts(second.scenario)
    assert content_key(a["base_model"]) == content_key(b["base_model"])
    assert content_key(a["bank"]) == content_key(b["bank"])
    assert content_key(a["programmed"]) != content_key(b["programmed"])
    other_seed = _phase_parts(first.scenario.for_seed(1))
    assert content_key(other_seed["base_model"]) != content_key(a["base_model"])
    other_method = _phase_parts(load_study("tiny", ["methods.fusion.epochs=9"]).scenario)["programmed"]
    assert content_key(other_method) == content_key(_phase_parts(load_study("tiny").scenario)["programmed"])


def test_a_base_with_a_head_per_task_is_keyed_by_the_task_names() -> None:
    """An encoder's base phase embeds every named task's classes, so a sweep over the bank's sources must not
    reuse the first point's base (it would lack the new sources' heads); a digits base is shared across sources."""
    sources = "tasks.sources=[[wn_nature, wn_verbs_physical], [wn_nature, wn_verbs_physical, wn_mind_pos]]"
    first, second = (_phase_parts(point.scenario) for point in load_study("minilm_tiny", [], [sources]).points)
    assert content_key(first["base_model"]) != content_key(second["base_model"])
    assert content_key(first["programmed"]) != content_key(second["programmed"])
    targets = _phase_parts(load_study("minilm_tiny", ["tasks.targets=[wn_regrouped]"]).scenario)
    assert content_key(targets["bank"]) == content_key(first["bank"])  # the LoRAs do not depend on the targets
    assert content_key(targets["base_model"]) != content_key(first["base_model"])
    digits = [_phase_parts(p.scenario) for p in load_study("tiny", [], ["tasks.sources=[[invert], [blur]]"]).points]
    assert content_key(digits[0]["base_model"]) == content_key(digits[1]["base_model"])


def test_cache_store_detects_corruption(tmp_path: Path) -> None:
    store = CacheStore(tmp_path / "cache")
    blob = {"a.bin": b"\x00" * 100, "b.json": b"{}"}
    folder = store.put("base_model", "k" * 64, blob, {"seed": 0})
    assert store.get("base_model", "k" * 64) == blob
    (folder / "a.bin").write_bytes(b"\x00" * 50)  # truncated
    assert store.get("base_model", "k" * 64) is None and not folder.exists()
    store.put("bank", "j" * 64, blob, {})
    (store.entry_dir("bank", "j" * 64) / "manifest.json").write_text("{not json")
    assert store.get("bank", "j" * 64) is None


def test_checksum_manifest(tmp_path: Path) -> None:
    manifest = ChecksumManifest(tmp_path)
    manifest.write("units/u.json", b'{"x": 1}')
    again = ChecksumManifest(tmp_path)
    assert again.read("units/u.json") == b'{"x": 1}'
    (tmp_path / "units" / "u.json").write_bytes(b'{"x": ')
    assert again.read("units/u.json") is None
    assert again.read("units/other.json") is None
    (tmp_path / "manifest.json").write_text("garbage")
    assert ChecksumManifest(tmp_path).entries == {}


def test_summary_over_seeds_uses_the_t_interval() -> None:
    rows = [{"point": "p0", "method": "m", "drift_s": 0.0, "seed": seed, "task": task, "accuracy": acc,
             "adapt_energy_pj": 1.0, "cell_write_pulses": 0.0, "inference_energy_pj_per_sample": 2.0}
            for seed, accs in ((0, (0.5, 0.7)), (1, (0.7, 0.9)), (2, (0.9, 1.0)))
            for task, acc in zip("ab", accs)]  # fmt: skip
    summary = summarise_over_seeds(pd.DataFrame(rows), ["point"])
    (row,) = summary.to_dict("records")
    per_seed = [0.6, 0.8, 0.95]
    mean = sum(per_seed) / 3
    std = (sum((v - mean) ** 2 for v in per_seed) / 2) ** 0.5
    assert row["n_seeds"] == 3 and row["accuracy_mean"] == pytest.approx(mean)
    assert row["accuracy_ci95"] == pytest.approx(4.302653 * std / 3**0.5, rel=1e-5)  # t(0.975, 2 dof)
    assert row["adapt_energy_pj_ci95"] == 0.0
    assert json.loads(json.dumps(row))  # plain values
