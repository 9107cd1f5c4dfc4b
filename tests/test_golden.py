"""scripts/update_golden.py: the golden comparison fails on changes beyond its tolerances (a perturbed copy of the
golden document shows it), and the golden file is never regenerated from a dirty git tree."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pytest
from script_module import load_script


def load_update_golden():
    return load_script("update_golden")


def _golden(tmp_path: Path) -> dict:
    """A golden document made by the script's own `extract` from a small hand-made run directory."""
    import pandas as pd

    module = load_update_golden()
    rows = [{"method": method, "task": task, "seed": 0, "drift_s": drift_s, "accuracy": 0.4 + 0.01 * i,
             "cell_write_pulses": 1000.0 * i, "adapt_energy_pj": 3.0e9, "adapt_latency_s": 0.5,
             "inference_energy_pj_per_sample": 8.0e5, "trainable_params": 10, "digital_state_words": 20,
             "switches_to_wearout": float("inf")}
            for i, (method, task, drift_s) in enumerate(
                (m, t, d) for m in ("fusion", "lora_in_situ") for t in ("a", "b") for d in (0.0, 3600.0))]  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "metrics.csv", index=False)
    return {"tolerances": module.TOLERANCES, "rows": module.extract(tmp_path)}


def test_comparison_passes_within_and_fails_beyond_tolerance(tmp_path: Path) -> None:
    module = load_update_golden()
    golden = _golden(tmp_path)
    assert len(golden["rows"]) == 8 and set(golden["rows"][0]) == {*module.KEYS, *module.TOLERANCES}
    rows = copy.deepcopy(golden["rows"])
    assert module.compare(golden, rows) == []
    fusion = next(i for i, row in enumerate(rows) if row["method"] == "fusion")
    in_situ = next(i for i, row in enumerate(rows) if row["method"] == "lora_in_situ")

    within = copy.deepcopy(rows)
    within[fusion]["accuracy"] += 0.02  # 4 of 200 test images: inside 0.025
    within[in_situ]["cell_write_pulses"] *= 1.01
    assert module.compare(golden, within) == []

    beyond = copy.deepcopy(rows)
    beyond[fusion]["accuracy"] += 0.03
    beyond[in_situ]["cell_write_pulses"] *= 1.05
    beyond[in_situ]["adapt_energy_pj"] *= 0.9
    beyond[fusion]["digital_state_words"] += 1
    problems = module.compare(golden, beyond)
    assert len(problems) == 4, problems
    assert any("accuracy" in p and "'fusion'" in p for p in problems)
    assert any("cell_write_pulses" in p for p in problems) and any("digital_state_words" in p for p in problems)

    missing = copy.deepcopy(rows)[1:]
    assert module.compare(golden, missing) == [f"missing row {tuple(rows[0][k] for k in module.KEYS)}"]


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.email=t@example.org", "-c", "user.name=t", *args],
                   check=True, capture_output=True)  # fmt: skip


def test_refuses_to_regenerate_from_a_dirty_tree(tmp_path: Path, capsys) -> None:
    module = load_update_golden()
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.txt").write_text("one\n")
    _git(repo, "add", "a.txt")
    _git(repo, "commit", "-q", "-m", "first")
    assert module.dirty_paths(repo) == []
    (repo / "a.txt").write_text("two\n")  # a modified tracked file
    out = tmp_path / "golden.json"
    with pytest.raises(SystemExit) as done:
        module.main(["--repo", str(repo), "--out", str(out)])
    assert done.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "dirty git tree" in error and "a.txt" in error
    assert not out.exists()
    _git(repo, "checkout", "-q", "a.txt")
    (repo / "new.txt").write_text("untracked\n")  # an untracked file makes the tree dirty too
    with pytest.raises(SystemExit) as done:
        module.main(["--repo", str(repo), "--out", str(out)])
    assert done.value.code == 2 and not out.exists()


def test_golden_file_is_small_and_from_a_commit() -> None:
    module = load_update_golden()
    golden = json.loads(module.GOLDEN.read_text())
    assert module.GOLDEN.stat().st_size < 64_000
    assert golden["scenario"] == "tiny" and len(golden["git_hash"]) == 40  # a clean commit's hash, no "-dirty"
    assert golden["tolerances"] == module.TOLERANCES
    assert len({tuple(row[k] for k in module.KEYS) for row in golden["rows"]}) == len(golden["rows"]) > 0
    assert module.compare(golden, golden["rows"]) == []
