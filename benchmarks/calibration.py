"""Fusion's row-norm calibration read-out: noise-free vs the mean of K noisy reads, and what is stored vs read again.

For each option the scenario (default `tiny`, fusion only, fresh evaluation) is run end to end with
`calibration.norm_reads = K` and `calibration.norm_storage = S`, on the same cached base model and bank:

- `noise-free` (K = 0): the idealised read-out (the values the cells hold), priced as one read-out;
- `K = 1, 4, 16`: the mean of K read-outs through the arrays' read noise, DAC and ADC, each priced;
- `no_b_copy`, `on_demand` (at K = 4): less digital state (no B_stack copy; only ||W0 row||^2), the rest read out of
  the arrays again each time the coefficients change (every optimizer step, and once per evaluation).

Printed per option: fusion's mean test accuracy over the target tasks (and seeds), the digital state it keeps
(words: coefficients, magnitudes and the stored read-out), the calibration phase's energy (deployment, once), the
energy of the array reads during adaptation (cell reads, DAC, ADC, shift-add: the MVMs the on-demand options add),
and the inference energy per sample. A table, then one JSON line per option.

Run: python benchmarks/calibration.py [--scenario tiny] [--set key=value ...] [--out DIR]. More seeds
(`--set seeds=3`) narrow the accuracy intervals; the default is sized for a quick check, not for conclusions.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import pandas as pd

from energy import Ledger
from scenarios.loading import load_scenario
from scenarios.runner import run_scenario

OPTIONS = [
    ("noise-free", 0, "readout"),
    ("K=1", 1, "readout"),
    ("K=4", 4, "readout"),
    ("K=16", 16, "readout"),
    ("no_b_copy K=4", 4, "no_b_copy"),
    ("on_demand K=4", 4, "on_demand"),
]
ARRAY_EVENTS = ("cell_read", "dac_conversion", "adc_conversion", "shift_add")


def measure(scenario_name: str, sets: list[str], out: Path) -> list[dict[str, object]]:
    rows = []
    for label, reads, storage in OPTIONS:
        scenario = load_scenario(
            scenario_name,
            [
                "evaluate.drift_times_s=[0]", "outputs.plots=false", *sets,
                f"calibration.norm_reads={reads}", f"calibration.norm_storage={storage}",
            ],
        )  # fmt: skip
        if "fusion" not in [m.key for m in scenario.methods]:
            raise SystemExit("the scenario runs no `fusion` method entry")
        scenario = scenario.model_copy(update={"methods": [m for m in scenario.methods if m.key == "fusion"]})
        run = run_scenario(scenario, out / label.replace(" ", "_").replace("=", ""), fresh=True, progress=False,
                           cache_dir=out / "cache")  # fmt: skip
        metrics = pd.read_csv(run / "metrics.csv")
        fusion = metrics[(metrics["method"] == "fusion") & (metrics["drift_s"] == 0)]
        ledger = Ledger.from_csv(run / "ledger.csv")
        n_units = len(fusion)
        rows.append(
            {
                "option": label,
                "norm_reads": reads,
                "norm_storage": storage,
                "accuracy": round(float(fusion["accuracy"].mean()), 4),
                "accuracy_min": round(float(fusion["accuracy"].min()), 4),
                "units": n_units,
                "digital_state_words": int(fusion["digital_state_words"].iloc[0]),
                "calibration_energy_uj": round(ledger.total("energy_pj", phase="calibration") * 1e-6, 4),
                "adapt_array_energy_uj": round(
                    sum(ledger.total("energy_pj", phase="adapt", event=e) for e in ARRAY_EVENTS) * 1e-6 / n_units, 4
                ),
                "adapt_energy_uj": round(float(fusion["adapt_energy_pj"].mean()) * 1e-6, 4),
                "inference_nj_per_sample": round(float(fusion["inference_energy_pj_per_sample"].mean()) * 1e-3, 3),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="tiny", help="bundled scenario name or YAML file (default: tiny)")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="key.path=value override")
    parser.add_argument("--out", type=Path, default=None, help="folder for the runs (default: a temporary one)")
    args = parser.parse_args()
    if args.out is None:
        with tempfile.TemporaryDirectory(prefix="crossbar-sim-calibration-") as folder:
            rows = measure(args.scenario, args.sets, Path(folder))
    else:
        rows = measure(args.scenario, args.sets, args.out)
    print(pd.DataFrame(rows).to_string(index=False))
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
