"""scenarios.stats: the t interval, Wilson interval, sign test, rounding rule, summary over seeds and the paired
comparison, each checked against numbers worked out by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from scenarios import stats

T_975 = {1: 12.706205, 2: 4.302653, 3: 3.182446}  # Student t quantiles at 0.975 (tables)


def test_t_interval_against_hand_computation() -> None:
    interval = stats.t_interval([0.6, 0.8, 0.95])
    mean = (0.6 + 0.8 + 0.95) / 3
    std = math.sqrt(((0.6 - mean) ** 2 + (0.8 - mean) ** 2 + (0.95 - mean) ** 2) / 2)
    assert interval.mean == pytest.approx(mean) and interval.std == pytest.approx(std) and interval.n == 3
    assert interval.half == pytest.approx(T_975[2] * std / math.sqrt(3), rel=1e-6)
    assert interval.low == pytest.approx(mean - interval.half)
    one = stats.t_interval([0.5])
    assert one.mean == 0.5 and math.isnan(one.half) and math.isnan(one.std)
    same = stats.t_interval([0.07 - 0.075, 0.07 - 0.075, 0.02 - 0.025])  # equal up to float rounding
    assert same.std == 0.0 and same.half == 0.0


def test_wilson_interval_known_values() -> None:
    # Wilson (1927) score interval, z = 1.96: p = 0.4, n = 1000 -> [0.3700, 0.4307]; p = 0 keeps a positive upper bound
    low, high = stats.wilson_interval(0.4, 1000)
    assert low == pytest.approx(0.37006, abs=1e-4) and high == pytest.approx(0.43072, abs=1e-4)
    low, high = stats.wilson_interval(0.0, 100)
    assert low == 0.0 and high == pytest.approx(0.03699, abs=1e-4)
    assert all(math.isnan(v) for v in stats.wilson_interval(0.5, 0))


def test_sign_test() -> None:
    wins, losses, ties, p = stats.sign_test([0.1, 0.2, 0.05, 0.0, -0.01, 0.3])
    assert (wins, losses, ties) == (4, 1, 1)
    assert p == pytest.approx(2 * (1 + 5) / 32)  # two-sided: P(X <= 1) + P(X >= 4) with X ~ Bin(5, 1/2)
    assert math.isnan(stats.sign_test([0.0, 0.0])[3])


@pytest.mark.parametrize(
    ("half", "decimals"),
    [(3.04, 0), (0.14, 2), (0.25, 1), (14.3, 0), (22.0, -1), (0.096, 2), (0.0096, 3), (1.0, 1), (950.0, -2)],
)
def test_decimals_follow_the_first_significant_digit(half: float, decimals: int) -> None:
    assert stats.decimals_for(half) == decimals


def test_format_mean_ci() -> None:
    assert stats.format_mean_ci(0.4213, 0.0304, scale=100, unit=" %") == "42 ± 3 %"
    assert stats.format_mean_ci(0.4213, 0.0141, scale=100, unit=" %") == "42.1 ± 1.4 %"
    assert stats.format_mean_ci(0.0825, 0.159, scale=100, unit=" %") == "10 ± 20 %"
    assert stats.format_mean_ci(0.4213, math.nan, scale=100, unit=" %", fallback_half=0.0304) == "42 %"
    assert stats.format_mean_ci(12_345.0, math.nan) == "12,000"  # no interval, no fallback: two significant digits
    assert stats.format_mean_ci(12_345.0, 480.0, show_half=False) == "12,300"
    assert stats.format_mean_ci(-0.004, 0.2, scale=100, unit=" pt") == "0 ± 20 pt"  # no "-0"
    assert stats.format_mean_ci(0.12, 0.05, scale=100, unit=" pt", signed=True) == "+12 ± 5 pt"
    assert stats.format_mean_ci(-0.12, 0.05, scale=100, unit=" pt", signed=True) == "-12 ± 5 pt"
    assert stats.format_mean_ci(math.nan, 0.1) == "n/a"
    assert stats.format_si(3.4e-3, 1.4e-4, "J") == "3.40 ± 0.14 mJ"
    assert stats.format_si(3.4e-3, 2.1e-4, "J") == "3.4 ± 0.2 mJ"
    assert stats.format_mean_ci(0.5, 0.096) == "0.50 ± 0.10"  # 0.096 rounds to 0.1: a leading 1, two digits
    assert stats.format_si(8.3e-7, math.nan, "J") == "830 nJ"
    assert stats.format_si(0.0, 0.0, "J") == "0"


def _frame() -> pd.DataFrame:
    """Two methods x two tasks x three seeds x one drift time, accuracies chosen so the answers are round."""
    reference = {(0, "a"): 0.40, (0, "b"): 0.50, (1, "a"): 0.42, (1, "b"): 0.52, (2, "a"): 0.44, (2, "b"): 0.54}
    gain = {0: 0.10, 1: 0.12, 2: 0.08}  # the other method's advantage per seed (same on both tasks) ...
    rows = []
    for (seed, task), acc in reference.items():
        rows.append({"method": "fusion", "task": task, "seed": seed, "drift_s": 0.0, "accuracy": acc,
                     "adapt_energy_pj": 100.0, "n_test": 200})  # fmt: skip
        bonus = gain[seed] - (0.10 if (seed, task) == (2, "b") else 0.0)  # ... except a loss on (2, b)
        rows.append({"method": "lora", "task": task, "seed": seed, "drift_s": 0.0, "accuracy": acc + bonus,
                     "adapt_energy_pj": 100.0 + 10 * seed, "n_test": 200})  # fmt: skip
    return pd.DataFrame(rows)


def test_paired_comparison_on_a_hand_made_frame() -> None:
    paired = stats.paired_differences(_frame(), reference="fusion")
    assert set(paired["method"]) == {"lora"}
    overall = paired[paired["task"] == "all"].iloc[0]
    # per-seed mean differences over tasks: 0.10, 0.12, (0.08 + -0.02) / 2 = 0.03
    per_seed = [0.10, 0.12, 0.03]
    mean = sum(per_seed) / 3
    std = math.sqrt(sum((d - mean) ** 2 for d in per_seed) / 2)
    assert overall["n_seeds"] == 3 and overall["n_pairs"] == 6
    assert overall["diff_mean"] == pytest.approx(mean)
    assert overall["diff_ci95"] == pytest.approx(T_975[2] * std / math.sqrt(3), rel=1e-6)
    t_statistic = mean / (std / math.sqrt(3))
    from scipy import stats as scipy_stats

    assert overall["t_p_value"] == pytest.approx(2 * scipy_stats.t.sf(t_statistic, 2))
    assert (overall["wins"], overall["losses"], overall["ties"]) == (5, 1, 0)
    assert overall["sign_p_value"] == pytest.approx(2 * (1 + 6) / 64)  # P(X <= 1) + P(X >= 5), X ~ Bin(6, 1/2)
    task_b = paired[paired["task"] == "b"].iloc[0]
    assert task_b["diff_mean"] == pytest.approx((0.10 + 0.12 - 0.02) / 3)
    assert (task_b["wins"], task_b["losses"]) == (2, 1)
    assert stats.paired_differences(_frame(), reference="absent").empty


def test_summary_has_interval_columns_per_task_and_overall() -> None:
    summary = stats.summarise(_frame())
    for column in ("accuracy_mean", "accuracy_std", "accuracy_ci95", "accuracy_ci_low", "accuracy_ci_high",
                   "accuracy_binom_n", "accuracy_binom_low", "accuracy_binom_high", "adapt_energy_pj_mean",
                   "adapt_energy_pj_ci95", "n_seeds", "n_tasks"):  # fmt: skip
        assert column in summary.columns, column
    assert list(summary["task"]) == ["a", "b", "all", "a", "b", "all"]
    fusion = summary[(summary["method"] == "fusion") & (summary["task"] == "all")].iloc[0]
    per_seed = [0.45, 0.47, 0.49]  # mean over tasks a, b per seed
    assert fusion["accuracy_mean"] == pytest.approx(0.47)
    assert fusion["accuracy_ci95"] == pytest.approx(T_975[2] * 0.02 / math.sqrt(3), rel=1e-6)
    assert fusion["accuracy_std"] == pytest.approx(pd.Series(per_seed).std())
    assert fusion["accuracy_binom_n"] == 200 * 2 * 3
    low, high = stats.wilson_interval(0.47, 1200)
    assert fusion["accuracy_binom_low"] == pytest.approx(low) and fusion["accuracy_binom_high"] == pytest.approx(high)
    lora_energy = summary[(summary["method"] == "lora") & (summary["task"] == "a")].iloc[0]
    assert lora_energy["adapt_energy_pj_mean"] == pytest.approx(110.0)
    assert lora_energy["adapt_energy_pj_ci95"] == pytest.approx(T_975[2] * 10.0 / math.sqrt(3), rel=1e-6)
    assert fusion["adapt_energy_pj_ci95"] == 0.0  # the same on every seed: an interval of zero width


def test_sweep_summary_uses_the_same_interval() -> None:
    from scenarios.sweep import summarise_over_seeds

    frame = _frame().assign(cell_write_pulses=0.0, inference_energy_pj_per_sample=1.0)
    ours = stats.summarise(frame)
    sweep = summarise_over_seeds(frame, [])
    for method in ("fusion", "lora"):
        mine = ours[(ours["method"] == method) & (ours["task"] == "all")].iloc[0]
        theirs = sweep[sweep["method"] == method].iloc[0]
        assert theirs["accuracy_ci95"] == pytest.approx(mine["accuracy_ci95"])
