"""Scenario files, workloads, the resumable runner, results, plots and the `crossbar-sim` CLI.

Modules: `schema` (pydantic models of a scenario YAML), `loading` (`load_scenario`: files, bundled names, `--set`
overrides, one-line errors), `errors` (`ScenarioError`, the one-line user-error type), `tasks` (offline digits task
family and user .npz tasks), `models` (the patch-transformer base network and its training), `workloads` (both in
one import), `runner` (phases, checkpoints), `results` (metrics.csv, results.json, report.md), `stamp` (version
and git hash), `plots` (figures from a run directory) and `cli`. Bundled scenarios: `multitask.yaml` (the default
study) and `tiny.yaml` (the same study at toy size, for tests). Imports nothing heavy at package import, so the
CLI starts fast.
"""
