from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from energy import Ledger
from scenarios.cli import main
from scenarios.plots import FIGURES, ResultsError, plot_run

METHODS = ("zero_shot", "fusion", "lora_program_once", "lora_in_situ", "lora_digital", "lorahub")
TASKS = ("rotate_+45", "invert_noise", "blur_shift")
DRIFTS_S = (0.0, 3600.0, 86400.0, 2592000.0)
LAYERS = [f"blocks.{b}.{name}" for b in range(3) for name in ("q", "v")]
WRITES_PER_LAYER = {"lora_program_once": 2e3, "lora_in_situ": 4e5}  # the methods that program cells when adapting


def write_synthetic_run(run_dir: Path, repeats: int = 2, seed: int = 0) -> None:
    """A plausible metrics.csv and ledger.csv: zero-energy zero-shot, write-free fusion, write-heavy in-situ LoRA."""
    rng = np.random.default_rng(seed)
    rows = []
    ledger = Ledger()
    for layer in LAYERS:
        ledger.record("set_pulse", 5e4, phase="deploy_base", layer=layer)
        ledger.record("reset_pulse", 3e4, phase="deploy_base", layer=layer)
        ledger.record("verify_read", 2e5, phase="deploy_base", layer=layer)
        ledger.record("set_pulse", 1e4, phase="deploy_bank", layer=layer)
    ledger.record("cell_read", 1e5, phase="calibration")
    for m_index, method in enumerate(METHODS):
        writes = WRITES_PER_LAYER.get(method, 0.0)
        for task in TASKS:
            for layer in LAYERS:
                if writes:
                    ledger.record("set_pulse", writes, phase="adapt", task=task, method=method, layer=layer)
                    ledger.record("verify_read", 3 * writes, phase="adapt", task=task, method=method, layer=layer)
                ledger.record("cell_read", 1e3, phase="inference", task=task, method=method, layer=layer)
                ledger.record("adc_conversion", 200, phase="inference", task=task, method=method, layer=layer)
            if method != "zero_shot":
                ledger.record("digital_mult", 1e5 * (m_index + 1), phase="adapt", task=task, method=method)
                ledger.record("sram_read", 2e4, phase="adapt", task=task, method=method)
            if method == "lora_digital":
                ledger.record("digital_mult", 5e4, phase="inference", task=task, method=method)
            adapt_pj = ledger.total(phase="adapt", task=task, method=method)
            pulses = ledger.cell_write_pulses(phase="adapt", task=task, method=method)
            for drift_s in DRIFTS_S:
                for repeat in range(repeats):
                    base_accuracy = 0.35 if method == "zero_shot" else 0.7 + 0.04 * m_index
                    decay = 0.02 * math.log1p(drift_s / 3600.0)
                    rows.append(
                        {
                            "method": method,
                            "task": task,
                            "drift_s": drift_s,
                            "repeat": repeat,
                            "accuracy": float(np.clip(base_accuracy - decay + rng.normal(0, 0.02), 0, 1)),
                            "trainable_params": 0 if method == "zero_shot" else 1000 * (m_index + 1),
                            "cell_write_pulses": pulses,
                            "adapt_energy_pj": adapt_pj,
                            "adapt_latency_s": adapt_pj * 1e-9,
                            "inference_energy_pj_per_sample": 1e4 * (1.5 if method == "lora_digital" else 1.0),
                            "switches_to_wearout": 1e6 / (pulses / len(LAYERS) / 64) if pulses else math.inf,
                            "wear_max_pulses": 3 * pulses / len(LAYERS) / 64,
                            "wear_mean_pulses": pulses / len(LAYERS) / 64,
                            "endurance_pulses": 1e6,
                        }
                    )
    run_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(run_dir / "metrics.csv", index=False)
    ledger.to_csv(run_dir / "ledger.csv")


def test_plot_run_writes_every_figure_in_both_formats(tmp_path: Path) -> None:
    write_synthetic_run(tmp_path)
    written = plot_run(tmp_path)
    assert sorted(p.name for p in written) == sorted(f"{stem}.{fmt}" for stem in FIGURES for fmt in ("png", "svg"))
    for path in written:
        assert path.parent == tmp_path / "figures" and path.stat().st_size > 1000
        assert path.read_bytes().startswith(b"\x89PNG") if path.suffix == ".png" else b"<svg" in path.read_bytes()


def test_svg_output_is_reproducible(tmp_path: Path) -> None:
    write_synthetic_run(tmp_path, repeats=1)
    first = {p.name: p.read_bytes() for p in plot_run(tmp_path, formats=("svg",))}
    second = {p.name: p.read_bytes() for p in plot_run(tmp_path, formats=("svg",))}
    assert first == second


def test_plot_without_ledger_skips_ledger_figures(tmp_path: Path) -> None:
    write_synthetic_run(tmp_path, repeats=1)
    (tmp_path / "ledger.csv").unlink()
    stems = {p.stem for p in plot_run(tmp_path, formats=("png",))}
    assert stems == set(FIGURES) - {"energy_breakdown", "cell_writes_per_layer"}


def test_plot_handles_single_drift_time_and_all_infinite_endurance(tmp_path: Path) -> None:
    write_synthetic_run(tmp_path, repeats=1)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    metrics = metrics[(metrics["drift_s"] == 0) & metrics["method"].isin(["zero_shot", "fusion"])]
    metrics.to_csv(tmp_path / "metrics.csv", index=False)
    assert len(plot_run(tmp_path, formats=("png",))) == len(FIGURES)


def test_missing_column_is_a_results_error(tmp_path: Path) -> None:
    write_synthetic_run(tmp_path, repeats=1)
    pd.read_csv(tmp_path / "metrics.csv").drop(columns=["switches_to_wearout"]).to_csv(
        tmp_path / "metrics.csv", index=False
    )
    with pytest.raises(ResultsError, match="switches_to_wearout"):
        plot_run(tmp_path)


def test_cli_plot(tmp_path: Path, capsys) -> None:
    write_synthetic_run(tmp_path, repeats=1)
    with pytest.raises(SystemExit) as done:
        main(["plot", str(tmp_path / "nowhere")])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "metrics.csv" in err
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metrics.csv").write_text("method,task\nfusion,blur\n")
    with pytest.raises(SystemExit) as done:
        main(["plot", str(tmp_path / "broken")])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing column(s) drift_s" in err
    main(["plot", str(tmp_path)])
    assert "figure files" in capsys.readouterr().out
    assert (tmp_path / "figures" / "endurance.svg").is_file()
