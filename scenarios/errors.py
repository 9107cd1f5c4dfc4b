"""The one exception type for problems in a user's scenario or data, and the one-line message format it uses.

Every check on user input in `scenarios` raises `ScenarioError`; the CLI turns it into one line on stderr and exit
code 2. Messages name where the problem is (file and dotted key path), what was found and what was expected.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

__all__ = ["ScenarioError", "describe_value", "did_you_mean"]


class ScenarioError(ValueError):
    """A problem in a scenario file, a `--set` override or a user data file. The message is always one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def describe_value(value: object, limit: int = 60) -> str:
    """A short, one-line rendering of a user-supplied value for an error message (strings quoted)."""
    if isinstance(value, bool) or value is None:
        text = {True: "true", False: "false", None: "null"}[value]
    elif isinstance(value, str):
        text = repr(value)
    elif isinstance(value, dict):
        text = "a mapping {" + ", ".join(f"{k}: ..." for k in list(value)[:4]) + (", ...}" if len(value) > 4 else "}")
    elif isinstance(value, list):
        text = "[" + ", ".join(describe_value(v, 20) for v in value[:6]) + (", ...]" if len(value) > 6 else "]")
    else:
        text = repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def did_you_mean(word: object, choices: Sequence[str]) -> str:
    """ " (did you mean 'x'?)" for the closest of `choices` to a mistyped `word`, or "" when none is close."""
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
