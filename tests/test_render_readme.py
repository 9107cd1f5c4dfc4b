"""scripts/render_readme_tables.py renders the README's result table from a run directory's files."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pandas as pd

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "render_readme_tables.py"


def _load():
    spec = importlib.util.spec_from_file_location("render_readme_tables", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_dir(tmp_path: Path) -> Path:
    rows = []
    for method, acc, pulses, wear in (("fusion", 0.40, 0.0, math.inf), ("lora_in_situ", 0.50, 123_456.0, 7_812.0)):
        for task in ("a", "b"):
            for drift_s, loss in ((0.0, 0.0), (86_400.0, 0.05)):
                rows.append({"method": method, "task": task, "seed": 0, "drift_s": drift_s, "accuracy": acc - loss,
                             "trainable_params": 10, "digital_state_words": 20, "cell_write_pulses": pulses,
                             "adapt_energy_pj": 3.4e9, "inference_energy_pj_per_sample": 8.3e5,
                             "switches_to_wearout": wear})
    pd.DataFrame(rows).to_csv(tmp_path / "metrics.csv", index=False)
    scenario = {"name": "t", "tasks": {"test_size": 500}}
    (tmp_path / "config.json").write_text(json.dumps({"scenario": scenario}))
    return tmp_path


def test_table_rows_rounding_and_interval(tmp_path: Path) -> None:
    table = _load().render(_run_dir(tmp_path))
    lines = table.splitlines()
    fusion = next(line for line in lines if line.startswith("| fusion "))
    in_situ = next(line for line in lines if line.startswith("| lora_in_situ "))
    # p = 0.40 on 1,000 pooled images: half-width 1.96 * sqrt(0.24 / 1000) = 3.04 points -> whole percent.
    assert "| 40 ± 3 % | 35 % |" in fusion
    assert "| 0 | 3.4 mJ | 830 nJ | never |" in fusion
    assert "| 120,000 |" in in_situ and "| 7,800 |" in in_situ
    assert "after 1 days" in lines[0]


def test_readme_block_replaced(tmp_path: Path) -> None:
    module = _load()
    run_dir = _run_dir(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:default -->\nold\n<!-- /results:default -->\nend\n")
    import sys

    argv = sys.argv
    sys.argv = ["render", str(run_dir), "--readme", str(readme)]
    try:
        module.main()
    finally:
        sys.argv = argv
    text = readme.read_text()
    assert "old" not in text and "| fusion | 40 ± 3 % |" in text and text.endswith("<!-- /results:default -->\nend\n")
