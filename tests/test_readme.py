"""README.md, executed: every ```python and ```bash block runs as written, and the README's table of bundled scenarios
is the one `crossbar-sim run --help` prints (both from `scenarios.bundled`).

How a block runs. A python block runs in a fresh interpreter (this one's `sys.executable`), a bash block under
`bash -euo pipefail` with this interpreter's bin folder first on PATH (so `python`, `pip`, `dask` and `crossbar-sim`
are this environment's). Each runs in its own empty temporary directory, where what it writes (`bank/`, `adapters/`,
`runs/...`) stays, with the repository root first on PYTHONPATH: `crossbar`, `energy`, `fusion` and `scenarios`
(with its bundled scenarios, named as the README names them: `crossbar-sim run tiny`) are this checkout's, as after
the README's `pip install -e .`. MPLBACKEND=Agg, and HF_HUB_OFFLINE=1 / TRANSFORMERS_OFFLINE=1 turn any Hugging Face
download a block attempts into a failure. Leftover background processes (a block's `&` jobs) are killed with the block.

Marking a block: an HTML comment on the line right before its fence, `<!-- readme-test: WORD ... -->`, whose words
come from this fixed vocabulary (any other word, or a comment before no runnable block, fails the test):
- `long`: takes minutes or changes the environment (a full study, `pip install`, the whole suite, a Dask cluster);
  runs only under `python -m pytest -m long` (pyproject's addopts deselect `long` and `real` by default).
- `real`: the real study, with `pip install -e ".[real]"` (network needed for the install); only under `-m real`.
- `hf`: needs the `hf` extra (transformers, peft); skipped, saying so, without it.
- `from-clone`: runs in the repository root instead of a temporary directory (a block that installs the checkout
  with `pip install -e .`, which records the folder it was run from; its `runs/` then lands in the clone).
Every other fenced block is ```yaml or ```text (not run); a fence without a language fails the test.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from scenarios.bundled import BUNDLED_SCENARIOS
from scenarios.loading import bundled_scenarios

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RUNNABLE = ("python", "bash")
NOT_RUN = ("yaml", "text")
MARKS = {"long": pytest.mark.long, "real": pytest.mark.real}
WORDS = {*MARKS, "hf", "from-clone"}
HAS_HF = all(importlib.util.find_spec(name) is not None for name in ("transformers", "peft"))
QUICK_TIMEOUT_S = 600
"""Per default-run block: far above its ~10-30 s, so only a hang trips it."""
LONG_TIMEOUT_S = 4 * 3600
"""Per long or real block: the real study alone took 36-43 min on 2 cores (README)."""
FENCE = re.compile(r"^```(\S*)\s*$")
MARKER = re.compile(r"^<!--\s*readme-test:(.*?)-->\s*$")
TABLE = re.compile(r"<!-- bundled-scenarios:[^\n]*-->\n(.*?)<!-- /bundled-scenarios -->\n", re.S)


@dataclass(frozen=True)
class Block:
    """One fenced block of README.md: its language, the line of its opening fence, its text and its marker words."""

    language: str
    line: int
    code: str
    words: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.language}-line{self.line}"


def readme_blocks(text: str) -> tuple[list[Block], list[str]]:
    """Every fenced block of `text`, and the problems found: a fence without a language, an unknown marker word,
    a marker that is not right before a runnable block, an unclosed fence."""
    blocks: list[Block] = []
    problems: list[str] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            marker = MARKER.match(lines[index])
            if marker and not (index + 1 < len(lines) and FENCE.match(lines[index + 1])):
                problems.append(f"line {index + 1}: readme-test marker not right before a fence")
            index += 1
            continue
        language, start = opening.group(1), index
        end = next((k for k in range(start + 1, len(lines)) if lines[k].strip() == "```"), None)
        if end is None:
            problems.append(f"line {start + 1}: fence never closed")
            break
        marker = MARKER.match(lines[start - 1]) if start else None
        words = tuple(marker.group(1).split()) if marker else ()
        if language not in RUNNABLE + NOT_RUN:
            problems.append(f"line {start + 1}: fence language {language!r}, expected one of {RUNNABLE + NOT_RUN}")
        if words and language not in RUNNABLE:
            problems.append(f"line {start}: readme-test marker before a {language!r} block, which is not run")
        problems += [f"line {start}: unknown readme-test word {word!r}, expected one of {sorted(WORDS)}"
                     for word in words if word not in WORDS]  # fmt: skip
        blocks.append(Block(language, start + 1, "\n".join(lines[start + 1 : end]) + "\n", words))
        index = end + 1
    return blocks, problems


def _params() -> list[object]:
    blocks, _ = readme_blocks(README.read_text(encoding="utf-8"))
    params = []
    for block in blocks:
        if block.language not in RUNNABLE:
            continue
        marks = [MARKS[word] for word in block.words if word in MARKS]
        if "hf" in block.words:
            marks.append(pytest.mark.skipif(not HAS_HF, reason='needs the hf extra (pip install -e ".[hf]")'))
        params.append(pytest.param(block, marks=marks, id=block.id))
    return params


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(MPLBACKEND="Agg", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def run_block(block: Block, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run `block` as the module docstring says; its whole process group is killed when it ends or times out."""
    script = tmp_path / ("block.py" if block.language == "python" else "block.sh")
    script.write_text(block.code, encoding="utf-8")
    work = ROOT if "from-clone" in block.words else tmp_path / "work"
    work.mkdir(exist_ok=True)
    command = [sys.executable, str(script)] if block.language == "python" else ["bash", "-euo", "pipefail", str(script)]
    timeout = LONG_TIMEOUT_S if set(block.words) & set(MARKS) else QUICK_TIMEOUT_S
    # output to files, not pipes: a block's background jobs would hold a pipe open after the block has ended
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(command, cwd=work, env=_environment(), stdout=stdout, stderr=stderr,
                                   start_new_session=True)  # fmt: skip
        try:
            process.wait(timeout=timeout)
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
    return subprocess.CompletedProcess(command, process.returncode, out.read_text(errors="replace"),
                                       err.read_text(errors="replace"))  # fmt: skip


def test_every_fence_is_labelled_and_every_marker_known() -> None:
    blocks, problems = readme_blocks(README.read_text(encoding="utf-8"))
    assert not problems, problems
    assert {b.language for b in blocks} >= {"python", "bash"}


def test_the_parser_finds_bad_fences_and_markers() -> None:
    text = ("<!-- readme-test: long -->\n```\nx\n```\n"
            "<!-- readme-test: slow -->\n```bash\ntrue\n```\n<!-- readme-test: hf -->\n")
    blocks, problems = readme_blocks(text)
    assert [b.words for b in blocks] == [("long",), ("slow",)] and blocks[1].code == "true\n"
    assert len(problems) == 4, problems  # no language; marker on a non-runnable block; unknown word; stray marker


@pytest.mark.parametrize("block", _params())
def test_readme_block_runs(block: Block, tmp_path: Path) -> None:
    result = run_block(block, tmp_path)
    output = (result.stdout[-3000:] + "\n--- stderr ---\n" + result.stderr[-3000:]).strip()
    assert result.returncode == 0, f"README.md line {block.line} ({block.language}): exit {result.returncode}\n{output}"


def render_bundled_table() -> str:
    """The README's table of bundled scenarios, as `scenarios.bundled.BUNDLED_SCENARIOS` has it."""
    rows = [f"| `{name}` | {what} |" for name, what in BUNDLED_SCENARIOS.items()]
    return "\n".join(["| bundled scenario | what it runs |", "|---|---|", *rows]) + "\n"


def test_readme_lists_the_bundled_scenarios_from_the_one_list() -> None:
    match = TABLE.search(README.read_text(encoding="utf-8"))
    assert match, "README.md has no <!-- bundled-scenarios: ... --> table"
    assert match.group(1) == render_bundled_table(), f"replace the README's table by:\n{render_bundled_table()}"
    assert "lifetime" in BUNDLED_SCENARIOS


def test_run_help_lists_the_bundled_scenarios() -> None:
    result = subprocess.run([sys.executable, "-m", "scenarios", "run", "--help"], capture_output=True, text=True,
                            timeout=120, check=True, env=_environment())  # fmt: skip
    for name, what in BUNDLED_SCENARIOS.items():
        assert re.search(rf"^\s+{name}\s+{re.escape(what)}$", result.stdout, re.M), (name, result.stdout)
        assert len(what) <= 60, (name, "longer than the help's 80 columns allow")


def test_every_packaged_scenario_file_is_bundled_and_resolves() -> None:
    shipped = {path.stem for path in (ROOT / "scenarios").glob("*.yaml")}
    assert set(BUNDLED_SCENARIOS) == shipped, "list every scenarios/*.yaml in scenarios/bundled.py, and only those"
    assert all(path.is_file() for path in bundled_scenarios().values())
