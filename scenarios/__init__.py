"""Scenario files, workloads, the resumable runner, results, plots and the `crossbar-sim` CLI."""
