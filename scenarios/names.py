"""The one rule for names that become file names, and the check that a path stays inside its folder.

Task names (the keys of `tasks.npz` and every task family's names), method labels and run names end up in paths
the runner writes (`checkpoints/units/seed0/<task>__<method>.json`, `runs/<name>/`), so they all follow one rule:
1 to `NAME_MAX_CHARS` ASCII letters, digits, '_', '.', '+' or '-', starting with a letter or digit. No '/', no
leading '.' (so never '..'), no spaces or control characters. '+' is in the rule because the digits family names
tasks `rotate_+30`.

`inside(root, *parts)` builds every path the runner writes from such parts and refuses one that resolves outside
`root` (a '..' part, an absolute part, or a symbolic link pointing elsewhere), with a one-line ScenarioError.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from scenarios.errors import ScenarioError, describe_value

__all__ = ["NAME_MAX_CHARS", "NAME_PATTERN", "NAME_RULE", "check_name", "inside", "name_problem"]

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
"""What a name may look like (matched whole, `re.fullmatch`: a trailing newline does not pass)."""

NAME_MAX_CHARS = 80
"""Longest name, in characters (= bytes: the pattern is ASCII). The limit run names already had. The longest file
name the runner builds from names is a checkpoint, `<task>__<method>.json` (2 x 80 + 7 = 167 bytes), written via
a temporary `.<file>.<8 random>.tmp` (+14 = 181 bytes): under the 255-byte limit of common file systems."""

NAME_RULE = (
    f"a name of 1 to {NAME_MAX_CHARS} characters made of letters, digits, '_', '.', '+', '-', starting with a "
    "letter or digit"
)
"""The rule in words, for error messages."""

FILE_NAME_MAX_BYTES = 255
"""Longest single path component (bytes) on ext4, XFS, APFS and NTFS."""


def name_problem(name: object) -> str | None:
    """What is wrong with `name` as a name (a phrase for "got <phrase>, expected NAME_RULE"), or None if it is fine."""
    if not isinstance(name, str):
        return f"{describe_value(name)} (not a string)"
    if len(name) > NAME_MAX_CHARS:
        return f"{describe_value(name)} ({len(name)} characters)"
    if not NAME_PATTERN.fullmatch(name):
        return describe_value(name)
    return None


def check_name(name: object, what: str) -> str:
    """`name` if it follows the rule; else a ScenarioError naming `what` (e.g. "task name"), the value and the rule."""
    problem = name_problem(name)
    if problem is not None:
        raise ScenarioError(f"{what}: got {problem}, expected {NAME_RULE}")
    return name  # type: ignore[return-value]


def inside(root: str | os.PathLike[str], *parts: str) -> Path:
    """`root / parts...`, after checking that it stays inside `root` once resolved (symbolic links followed) and
    that no part is empty or longer than a file name may be. A ScenarioError naming the path otherwise: every
    path the runner writes into a run or cache directory is built here."""
    root_path = Path(root)
    path = root_path.joinpath(*parts)
    for part in parts:
        text = os.fspath(part)
        pieces = Path(text).parts if text else ("",)
        if any(not piece or len(os.fsencode(piece)) > FILE_NAME_MAX_BYTES for piece in pieces):
            raise ScenarioError(
                f"{path}: a path component is empty or longer than {FILE_NAME_MAX_BYTES} bytes ({describe_value(text)})"
            )
    base = root_path.resolve()
    resolved = path.resolve()
    if resolved != base and base not in resolved.parents:
        raise ScenarioError(f"{path}: resolves to {resolved}, outside {base}; refusing to write there")
    return path
