"""The scenarios shipped inside the package: each one's name (its YAML file's stem) and one line on what it runs.

The one list of them: `crossbar-sim run --help` prints it, the loader resolves bundled names from it
(`scenarios.loading.bundled_scenarios`), and the README's table of bundled scenarios is checked against it
(tests/test_readme.py, which also checks that every YAML file in the package is listed). No imports, so that the
CLI's help stays fast.
"""

from __future__ import annotations

BUNDLED_SCENARIOS: dict[str, str] = {
    "multitask": "the default study: digits, 8 LoRAs, 4 targets, 3 seeds",
    "tiny": "multitask at toy size, for tests and quick checks",
    "sweep_noise": "a smaller multitask swept over read noise, 3 seeds",
    "lifetime": "2,000 daily task switches on one device: accuracy, wear",
    "minilm_wordnet": "the real study: MiniLM on WordNet and BBC (real extra)",
    "minilm_tiny": "minilm_wordnet at toy size (needs the real extra)",
    "fusion_design": "the real study's bank swept, one seed (real extra)",
}
"""Bundled scenario name -> what it runs, in the order the help and the README list them (each line at most 60
characters, so that the help's table fits 80 columns)."""
