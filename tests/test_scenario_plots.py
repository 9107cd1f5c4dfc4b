from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer

from energy import Ledger
from scenarios.cli import main
from scenarios.plots import FIGURES, ResultsError, draw_figures, draw_lifetime, plot_run
from scenarios.plots_energy import energy_panels
from scenarios.quantities import energy_unit, format_duration, format_energy

METHODS = ("zero_shot", "fusion", "lora_program_once", "lora_in_situ", "lora_digital", "lorahub")
TASKS = ("rotate_+45", "invert_noise", "blur_shift")
DRIFTS_S = (0.0, 3600.0, 86400.0, 2592000.0)
LAYERS = [f"blocks.{b}.{name}" for b in range(3) for name in ("q", "v")]
WRITES_PER_LAYER = {"lora_program_once": 2e3, "lora_in_situ": 4e5}  # the methods that program cells when adapting
TEST_SIZE = 500  # test examples per (task, seed): one inference pass each in the ledger


def write_synthetic_run(run_dir: Path, repeats: int = 2, seed: int = 0, seeds: int = 0) -> None:
    """A plausible metrics.csv and ledger.csv: zero-energy zero-shot, write-free fusion, write-heavy in-situ LoRA.
    `seeds` > 0 writes a `seed` column with that many seeds, whose energies and writes differ by a few percent
    (the ledger, like a run's, sums over seeds); 0 writes a metrics.csv from before seeds (one seed, no column)."""
    rng = np.random.default_rng(seed)
    rows = []
    ledger = Ledger()
    for run_seed in range(max(seeds, 1)):
        spread = 1.0 + 0.03 * run_seed
        for layer in LAYERS:
            ledger.record("set_pulse", 5e4, phase="deploy_base", layer=layer)
            ledger.record("reset_pulse", 3e4, phase="deploy_base", layer=layer)
            ledger.record("verify_read", 2e5, phase="deploy_base", layer=layer)
            ledger.record("set_pulse", 1e4, phase="deploy_bank", layer=layer)
        ledger.record("cell_read", 1e5, phase="calibration")
        for m_index, method in enumerate(METHODS):
            for task in TASKS:
                units = _record_unit(Ledger(), ledger, method, m_index, task, spread)
                for drift_s in DRIFTS_S:
                    for repeat in range(repeats):
                        base_accuracy = 0.35 if method == "zero_shot" else 0.7 + 0.04 * m_index
                        decay = 0.02 * math.log1p(drift_s / 3600.0)
                        accuracy = float(np.clip(base_accuracy - decay + rng.normal(0, 0.02), 0, 1))
                        row = {"method": method, "task": task, **({"seed": run_seed} if seeds else {}),
                               "drift_s": drift_s, "repeat": repeat, "accuracy": accuracy, **units}  # fmt: skip
                        rows.append(row)
    run_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(run_dir / "metrics.csv", index=False)
    ledger.to_csv(run_dir / "ledger.csv")


def _record_unit(unit: Ledger, ledger: Ledger, method: str, m_index: int, task: str, spread: float) -> dict:
    """Record one (method, task, seed) adaptation and test pass into `unit` and the run's `ledger`; its metrics."""
    writes = WRITES_PER_LAYER.get(method, 0.0) * spread
    for book in (unit, ledger):
        for layer in LAYERS:
            if writes:
                book.record("set_pulse", writes, phase="adapt", task=task, method=method, layer=layer)
                book.record("verify_read", 3 * writes, phase="adapt", task=task, method=method, layer=layer)
            book.record("cell_read", 1e3, phase="inference", task=task, method=method, layer=layer)
            book.record("adc_conversion", 200, phase="inference", task=task, method=method, layer=layer)
        if method != "zero_shot":
            book.record("digital_mult", 1e5 * (m_index + 1) * spread, phase="adapt", task=task, method=method)
            book.record("sram_read", 2e4, phase="adapt", task=task, method=method)
        if method == "lora_digital":
            book.record("digital_mult", 5e4, phase="inference", task=task, method=method)
    adapt_pj = unit.total(phase="adapt")
    pulses = unit.cell_write_pulses(phase="adapt")
    return {
        "trainable_params": 0 if method == "zero_shot" else 1000 * (m_index + 1),
        "cell_write_pulses": pulses,
        "adapt_energy_pj": adapt_pj,
        "adapt_latency_s": adapt_pj * 1e-9,
        "inference_energy_pj_per_sample": unit.total(phase="inference") / TEST_SIZE,
        "n_test": TEST_SIZE,
        "switches_to_wearout": 1e6 / (pulses / len(LAYERS) / 64) if pulses else math.inf,
        "wear_max_pulses": 3 * pulses / len(LAYERS) / 64,
        "wear_mean_pulses": pulses / len(LAYERS) / 64,
        "endurance_pulses": 1e6,
    }


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


# --- the figures' data: units, intervals over seeds, axes, labels and legends --------------------------------------
SEEDS = 3


@pytest.fixture(scope="module")
def seeded_run(tmp_path_factory) -> tuple[Path, dict]:
    """A three-seed synthetic run and its figures, drawn once (and laid out, so text extents are final)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    run_dir = tmp_path_factory.mktemp("seeded")
    write_synthetic_run(run_dir, repeats=1, seeds=SEEDS)
    figures = draw_figures(run_dir)
    for fig in figures.values():
        FigureCanvasAgg(fig).draw()
    return run_dir, figures


def _summary(run_dir: Path) -> pd.DataFrame:
    from scenarios.stats import summarise

    metrics = pd.read_csv(run_dir / "metrics.csv")
    return summarise(metrics[metrics["drift_s"] == 0])


def _overall_row(summary: pd.DataFrame, method: str) -> pd.Series:
    return summary[(summary["method"] == method) & (summary["task"] == "all")].iloc[0]


def _errorbars(ax) -> dict[str, object]:
    """An axes' error-bar containers by their data line's gid (or label)."""
    return {c.lines[0].get_gid() or c.get_label(): c for c in ax.containers if isinstance(c, ErrorbarContainer)}


def _half_widths(container, axis: str) -> np.ndarray:
    """Half the length of each error bar along `axis` ("x" or "y") of a container with both or one kind."""
    bars = container.lines[2]
    collection = bars[0] if axis == "x" or not container.has_xerr else bars[1]
    index = 0 if axis == "x" else 1
    return np.array([abs(seg[1][index] - seg[0][index]) / 2 for seg in collection.get_segments()])


def _unit_in(label: str) -> str:
    match = re.search(r"\((pJ|nJ|µJ|mJ|J)\b", label)
    assert match, f"no energy unit in axis label {label!r}"
    return match.group(1)


def _overlap(first, second) -> bool:
    return first.width > 0 and second.width > 0 and first.overlaps(second)


def test_energy_unit_fits_the_magnitude() -> None:
    assert energy_unit([0.0, 3.39e9, 1.6e8]) == (1e9, "mJ")
    assert energy_unit([3.81e6, 7.8e5]) == (1e6, "µJ")
    assert energy_unit([830e3]) == (1e3, "nJ") and energy_unit([12.0]) == (1.0, "pJ")
    assert energy_unit([0.0]) == (1.0, "pJ") and energy_unit([4e12]) == (1e12, "J")
    assert format_energy(3.81449e6) == "3.81 µJ" and format_energy(999.9) == "1 nJ" and format_energy(0) == "0"


def test_durations_in_human_units() -> None:
    assert [format_duration(t) for t in DRIFTS_S] == ["0 s", "1 h", "1 day", "30 days"]
    assert format_duration(90) == "1.5 min" and format_duration(45) == "45 s" and format_duration(1e8) == "3.17 years"


def test_energy_vs_accuracy_has_no_log_axis_through_zero(seeded_run) -> None:
    run_dir, figures = seeded_run
    summary = _summary(run_dir)
    panels = {ax.get_label(): ax for ax in figures["energy_vs_accuracy"].axes}
    assert "energy:zero" in panels and all(ax.get_xscale() == "linear" for ax in panels.values())
    assert set(_errorbars(panels["energy:zero"])) == {"mean:zero_shot"}
    for name, ax in panels.items():
        if name == "energy:zero":
            continue
        unit = _unit_in(ax.get_xlabel())
        scale = {"pJ": 1.0, "nJ": 1e3, "µJ": 1e6, "mJ": 1e9, "J": 1e12}[unit]
        means = []
        for gid, bars in _errorbars(ax).items():
            row = _overall_row(summary, gid.removeprefix("mean:"))
            x, y = bars.lines[0].get_xydata()[0]
            assert x * scale == pytest.approx(row["adapt_energy_pj_mean"], rel=1e-9)
            assert energy_unit([row["adapt_energy_pj_mean"]])[1] == unit  # the unit that fits the panel's data
            assert _half_widths(bars, "x")[0] * scale == pytest.approx(row["adapt_energy_pj_ci95"], rel=1e-9)
            assert _half_widths(bars, "y")[0] == pytest.approx(100 * row["accuracy_ci95"], rel=1e-9)
            assert y == pytest.approx(100 * row["accuracy_mean"])
            means.append(x)
        left, right = ax.get_xlim()
        if len(means) > 1:  # zoomed on its methods: their differences span most of the axis
            assert (max(means) - min(means)) / (right - left) > 0.5


def test_energy_panels_split_zero_and_distant_clusters() -> None:
    means = {"zero_shot": 0.0, "fusion": 3.39e9, "lorahub": 1.6e8, "lora_in_situ": 3.01e9, "digital": 3.6e9}
    assert energy_panels(means) == [("zero", ["zero_shot"]), ("linear", ["lorahub"]),
                                    ("linear", ["fusion", "lora_in_situ", "digital"])]  # fmt: skip
    spread = {f"m{i}": 10.0 ** (2 * i) for i in range(1, 6)}
    assert energy_panels(spread) == [("log", list(spread))]


def test_energy_breakdown_shows_per_seed_means_in_fitting_units(seeded_run) -> None:
    run_dir, figures = seeded_run
    ledger = pd.read_csv(run_dir / "ledger.csv")
    summary = _summary(run_dir)
    deploy, adapt, infer = figures["energy_breakdown"].axes[:3]
    assert "mean per seed" in deploy.get_title() and "per target task" in adapt.get_title()
    assert "per test sample" in infer.get_title() and "all evaluations" not in infer.get_title()
    base_pj = ledger[ledger["phase"] == "deploy_base"]["energy_pj"].sum() / SEEDS
    expected = {
        deploy: {"deploy_base": base_pj},
        adapt: {m: _overall_row(summary, m)["adapt_energy_pj_mean"] for m in METHODS},
        infer: {m: _overall_row(summary, m)["inference_energy_pj_per_sample_mean"] for m in METHODS},
    }
    for ax, values in expected.items():
        unit = _unit_in(ax.get_ylabel())
        scale = {"pJ": 1.0, "nJ": 1e3, "µJ": 1e6, "mJ": 1e9, "J": 1e12}[unit]
        ticks = [t.get_text() for t in ax.get_xticklabels()]
        tops = {}
        for bar in ax.patches:
            x = round(bar.get_x() + bar.get_width() / 2)
            tops[ticks[x]] = max(tops.get(ticks[x], 0.0), bar.get_y() + bar.get_height())
        totals = [tops.get(name, 0.0) * scale for name in ticks]
        assert energy_unit(totals)[1] == unit
        for name, value in values.items():
            assert tops.get(name, 0.0) * scale == pytest.approx(value, rel=1e-9)
    labels = {t.get_text() for t in deploy.texts}
    assert format_energy(base_pj) in labels  # report.md's deployment table prints the same per-seed mean
    adapt_errors = [c for c in adapt.containers if isinstance(c, ErrorbarContainer)][0]
    halves = [_overall_row(summary, m)["adapt_energy_pj_ci95"] for m in METHODS]
    scale = {"pJ": 1.0, "nJ": 1e3, "µJ": 1e6, "mJ": 1e9, "J": 1e12}[_unit_in(adapt.get_ylabel())]
    assert _half_widths(adapt_errors, "y") * scale == pytest.approx(np.nan_to_num(halves), rel=1e-9)


def test_cell_writes_are_per_task_means_with_their_interval(seeded_run) -> None:
    run_dir, figures = seeded_run
    summary = _summary(run_dir)
    ax = figures["cell_writes_per_layer"].axes[0]
    grid = np.ma.filled(ax.images[0].get_array(), 0.0)
    names = [t.get_text() for t in ax.get_yticklabels()]
    for row_index, method in enumerate(METHODS):
        row = _overall_row(summary, method)
        assert grid[row_index].sum() == pytest.approx(row["cell_write_pulses_mean"], rel=1e-9)
        if row["cell_write_pulses_mean"]:
            assert "±" in names[row_index] and "/ task" in names[row_index]
    assert "per target task" in ax.get_title() and "mean over tasks and seeds" in ax.get_title()


def test_endurance_draws_never_as_a_label_with_spread_over_seeds(seeded_run) -> None:
    from scenarios.wear import rotation_switches

    run_dir, figures = seeded_run
    ax = figures["endurance"].axes[0]
    assert not ax.patches  # no bars at all: a never-writing method cannot look tallest
    metrics = pd.read_csv(run_dir / "metrics.csv")
    fresh = metrics[metrics["drift_s"] == 0]
    never = {t.get_gid().removeprefix("never:") for t in ax.texts if (t.get_gid() or "").startswith("never:")}
    assert never == {"zero_shot", "fusion", "lora_digital", "lorahub"}
    bars = _errorbars(ax)
    assert not any(gid.endswith(tuple(never)) for gid in bars)
    for method in ("lora_program_once", "lora_in_situ"):
        worst, average = rotation_switches(fresh[fresh["method"] == method].to_dict("records"))
        for name, value in (("worst cell", worst), ("average cell", average)):
            container = bars[f"{name}:{method}"]
            assert container.lines[0].get_ydata()[0] == pytest.approx(value)  # report.md's number
            assert _half_widths(container, "y")[0] > 0  # the spread over seeds is drawn


def test_value_labels_stay_clear_of_titles(seeded_run) -> None:
    _, figures = seeded_run
    for stem, fig in figures.items():
        renderer = fig.canvas.get_renderer()
        titles = [t.get_window_extent(renderer) for t in (fig._suptitle,) if t is not None]
        for ax in fig.axes:
            if not ax.get_title():
                continue
            title = ax.title.get_window_extent(renderer)
            texts = [t.get_window_extent(renderer) for t in ax.texts if t.get_text()]
            for box in texts:
                assert not _overlap(box, title) and not any(_overlap(box, t) for t in titles), stem
            for i, first in enumerate(texts):  # labels of neighbouring bars or methods do not run together
                assert not any(_overlap(first, second) for second in texts[i + 1 :]), stem


def test_legends_cover_no_data(seeded_run) -> None:
    _, figures = seeded_run
    for stem, fig in figures.items():
        renderer = fig.canvas.get_renderer()
        legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
        assert legends or stem == "cell_writes_per_layer", stem  # the heat map has a colour bar instead
        for legend in legends:
            box = legend.get_window_extent(renderer)
            for ax in fig.axes:
                covered = [ax.get_window_extent(renderer), ax.xaxis.label.get_window_extent(renderer)]
                covered += [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
                assert not any(_overlap(box, other) for other in covered), stem


def test_accuracy_vs_drift_in_human_time_with_intervals(seeded_run) -> None:
    run_dir, figures = seeded_run
    ax = figures["accuracy_vs_drift"].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0 s", "1 h", "1 day", "30 days"]
    assert ax.get_xscale() == "linear"
    from scenarios.stats import summarise

    summary = summarise(pd.read_csv(run_dir / "metrics.csv"))
    fusion = summary[(summary["method"] == "fusion") & (summary["task"] == "all")].sort_values("drift_s")
    container = _errorbars(ax)["fusion"]
    assert container.lines[0].get_ydata() == pytest.approx(100 * fusion["accuracy_mean"].to_numpy())
    assert _half_widths(container, "y") == pytest.approx(100 * fusion["accuracy_ci95"].to_numpy())


def test_report_prints_drift_times_in_human_units(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from scenarios import stats
    from scenarios.report import _statistics_report
    from scenarios.run_statistics import Statistics

    write_synthetic_run(tmp_path, repeats=1, seeds=2)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    statistics = Statistics(stats.summarise(metrics), stats.paired_differences(metrics))
    text = "\n".join(_statistics_report(statistics, SimpleNamespace(seed_list=[0, 1])))
    assert "### Drift time 30 days" in text and "### Drift time 1 h" in text
    assert "| method | task | 0 s | 1 h | 1 day | 30 days |" in text and "e+06" not in text


def _write_lifetime(run_dir: Path) -> None:
    rows = []
    for method, base, wear in (("fusion", 0.3, 0.0), ("lora_in_situ", 0.5, 1e-4)):
        for seed in (0, 1):
            for switch in range(1, 7):
                task = ("rotate_+45", "invert_noise")[(switch - 1) % 2]
                accuracy = base + (0.1 if task == "rotate_+45" else -0.1) + 0.01 * seed
                rows.append({"method": method, "seed": seed, "switch": switch, "task": task, "kind": "simulated",
                             "accuracy": accuracy, "worst_cell_wear_fraction": wear * switch,
                             "mean_cell_wear_fraction": wear * switch / 5})  # fmt: skip
            for switch in (10, 100, 1000):
                rows.append({"method": method, "seed": seed, "switch": switch, "task": "rotate_+45",
                             "kind": "extrapolated", "accuracy": math.nan, "worst_cell_wear_fraction": wear * switch,
                             "mean_cell_wear_fraction": wear * switch / 5})  # fmt: skip
    run_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(run_dir / "lifetime.csv", index=False)


def test_lifetime_names_the_task_of_each_switch(tmp_path: Path) -> None:
    _write_lifetime(tmp_path)
    fig = draw_lifetime(tmp_path)
    accuracy = fig.axes[0]
    ticks = [t.get_text() for t in accuracy.get_xticklabels()]
    assert ticks[:2] == ["1\nrotate_+45", "2\ninvert_noise"] and len(ticks) == 6
    bars = _errorbars(accuracy)
    assert set(bars) == {f"{m}|{t}" for m in ("fusion", "lora_in_situ") for t in ("rotate_+45", "invert_noise")}
    assert list(bars["lora_in_situ|invert_noise"].lines[0].get_xdata()) == [2, 4, 6]  # no zig-zag across tasks
    assert list(bars["lora_in_situ|rotate_+45"].lines[0].get_ydata()) == pytest.approx([60.5] * 3)
    legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert "rotate_+45 (switches 1, 3, 5)" in legend and "invert_noise (switches 2, 4, 6)" in legend
