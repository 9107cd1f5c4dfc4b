"""scripts/render_readme_tables.py renders the README's result table from a run directory's files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from script_module import load_script


def _load():
    return load_script("render_readme_tables")


def _run_dir(tmp_path: Path, seeds: tuple[int, ...] = (0,)) -> Path:
    """A run directory with only metrics.csv and config.json (as before summary.csv existed)."""
    rows = []
    for method, acc, pulses, wear in (("fusion", 0.40, 0.0, math.inf), ("lora_in_situ", 0.50, 123_456.0, 7_812.0)):
        for seed in seeds:
            for task in ("a", "b"):
                for drift_s, loss in ((0.0, 0.0), (86_400.0, 0.05)):
                    shift = 0.02 * seed if method == "lora_in_situ" else 0.0
                    rows.append({"method": method, "task": task, "seed": seed, "drift_s": drift_s,
                                 "accuracy": acc - loss + shift, "trainable_params": 10, "digital_state_words": 20,
                                 "cell_write_pulses": pulses, "adapt_energy_pj": 3.4e9,
                                 "inference_energy_pj_per_sample": 8.3e5, "switches_to_wearout": wear})  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "metrics.csv", index=False)
    scenario = {"name": "t", "tasks": {"test_size": 500}}
    (tmp_path / "config.json").write_text(json.dumps({"scenario": scenario}))
    return tmp_path


def test_one_seed_rounds_to_the_binomial_interval(tmp_path: Path) -> None:
    table = _load().render(_run_dir(tmp_path))
    lines = table.splitlines()
    fusion = next(line for line in lines if line.startswith("| fusion "))
    in_situ = next(line for line in lines if line.startswith("| lora_in_situ "))
    # One seed: no interval over seeds; p = 0.40 on 1,000 pooled images, Wilson 37.0-43.1 % (half 3.0 points):
    # one significant digit of the half-width -> whole percent, and no ± shown.
    assert "| fusion | 40 % | 37-43 % | 35 % | — | — |" in fusion
    assert "| 20 | 0 | 3.4 mJ | 830 nJ | never |" in fusion
    # lora_in_situ - fusion = +10 points on both (seed, task) pairs.
    assert "| +10 pt | 2 / 0 |" in in_situ
    assert "| 120,000 |" in in_situ and "| 7,800 |" in in_situ
    assert "| after 1 day |" in lines[0] and "none with one seed" in table and "(drift 0 s)" in table


def test_three_seeds_show_the_t_interval_and_paired_difference(tmp_path: Path) -> None:
    table = _load().render(_run_dir(tmp_path, seeds=(0, 1, 2)))
    in_situ = next(line for line in table.splitlines() if line.startswith("| lora_in_situ "))
    # per-seed means 0.50, 0.52, 0.54: s = 0.02, half = t(0.975, 2) * 0.02 / sqrt 3 = 4.97 points -> "52 ± 5 %";
    # the difference to fusion (0.40 on every seed) is 12 ± 5 points, won on all 6 (seed, task) pairs.
    assert "| lora_in_situ | 52 ± 5 % |" in in_situ
    assert "| +12 ± 5 pt | 6 / 0 |" in in_situ
    assert "3 seeds (0, 1, 2)" in table


def test_summary_files_of_a_run_are_used(tmp_path: Path) -> None:
    from scenarios import stats

    module = _load()
    run_dir = _run_dir(tmp_path, seeds=(0, 1, 2))
    metrics = pd.read_csv(run_dir / "metrics.csv")
    summary = stats.summarise(metrics, n_test=500)
    summary.loc[summary["method"] == "fusion", "accuracy_mean"] = 0.9  # the script must read this file
    summary.to_csv(run_dir / "summary.csv", index=False)
    stats.paired_differences(metrics).to_csv(run_dir / "paired.csv", index=False)
    assert "| fusion | 90 % |" in module.render(run_dir)


def test_readme_block_replaced(tmp_path: Path) -> None:
    module = _load()
    run_dir = _run_dir(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:default -->\nold\n<!-- /results:default -->\nend\n")
    module.main([str(run_dir), "--readme", str(readme)])
    text = readme.read_text()
    assert "old" not in text and "| fusion | 40 % |" in text and text.endswith("<!-- /results:default -->\nend\n")


def test_missing_block_or_run_is_a_usage_error(tmp_path: Path) -> None:
    module = _load()
    run_dir = _run_dir(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    for argv in ([str(run_dir), "--readme", str(readme)], [str(tmp_path / "missing")]):
        with pytest.raises(SystemExit) as done:
            module.main(argv)
        assert done.value.code == 2


def test_per_task_table_shows_each_task_with_its_interval(tmp_path: Path) -> None:
    table = _load().render_per_task(_run_dir(tmp_path, seeds=(0, 1, 2)))
    lines = table.splitlines()
    assert lines[0] == "| task | fusion | lora_in_situ |"
    # task "a": fusion 0.40 on every seed (no spread: 40 % to the binomial digit); lora_in_situ 0.50/0.52/0.54.
    row_a = next(line for line in lines if line.startswith("| `a` "))
    assert "| 52 ± 5 % |" in row_a
    assert any(line.startswith("| `b` ") for line in lines) and "3 seeds" in table


def test_figures_copied_under_the_readme_names_and_unreferenced_ones_pruned(tmp_path: Path, capsys) -> None:
    module = _load()
    (tmp_path / "run").mkdir()
    run_dir = _run_dir(tmp_path / "run")
    (run_dir / "figures").mkdir()
    for name in ("energy_vs_accuracy.png", "accuracy_vs_drift.png", "endurance.png"):
        (run_dir / "figures" / name).write_bytes(b"new " + name.encode())
    docs = tmp_path / "repo" / "docs" / "figures"
    docs.mkdir(parents=True)
    for name in ("energy_vs_accuracy.png", "accuracy_vs_drift.png", "lifetime.png", "endurance.png"):
        (docs / name).write_bytes(b"old")
    readme = tmp_path / "repo" / "README.md"
    readme.write_text("![a](docs/figures/energy_vs_accuracy.png)\n\n![b](docs/figures/accuracy_vs_drift.png)\n"
                      "![c](docs/figures/lifetime.png) [link](https://example.org/x.png)\n")  # fmt: skip
    text = readme.read_text()
    module.main([str(run_dir), "--figures", str(readme), "--figure", "energy_vs_accuracy"])
    assert (docs / "energy_vs_accuracy.png").read_bytes() == b"new energy_vs_accuracy.png"
    assert (docs / "accuracy_vs_drift.png").read_bytes() == b"old"  # not selected by --figure
    module.main([str(run_dir), "--figures", str(readme), "--prune-figures"])
    out = capsys.readouterr().out
    assert (docs / "accuracy_vs_drift.png").read_bytes() == b"new accuracy_vs_drift.png"
    assert (docs / "lifetime.png").read_bytes() == b"old" and "kept" in out  # the run did not draw it
    assert not (docs / "endurance.png").exists() and "deleted" in out  # nothing references it
    assert readme.read_text() == text and "| method |" not in out  # figures only: no table printed or written
    with pytest.raises(SystemExit) as done:
        module.main([str(run_dir), "--prune-figures"])
    assert done.value.code == 2
