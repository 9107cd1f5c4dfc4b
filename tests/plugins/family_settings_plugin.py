"""A plugin task family with settings of its own: `stripes`, whose `tasks:` section takes `stripe_level` and
`stripe_rows` (declared once, as a `FamilySettings` dataclass; the schema derives their YAML keys and bounds).

`tests/test_plugins.py` validates scenarios naming this file in `plugins:`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crossbar import derive_seed
from scenarios.families import FamilySettings, TaskData, TaskFamily, TaskRequest, register_task_family
from scenarios.sections import KeyedError, setting

_TASKS = ("horizontal", "vertical", "both", "faint")


@dataclass(frozen=True)
class StripesSettings(FamilySettings):
    """The `stripes` family's own `tasks:` keys."""

    stripe_level: float = setting(1.0, "Brightness of a stripe above the background (noise sigma 0.1).", gt=0)
    stripe_rows: int = setting(1, "Rows (or columns) each stripe covers, of the 4x4 image.", ge=1)

    def check(self) -> None:
        if self.stripe_rows > 3:
            raise KeyedError(("stripe_rows",), self.stripe_rows, "<= 3 (a stripe leaves one row of the 4x4 image)")


def load_stripes(request: TaskRequest) -> TaskData:
    settings = request.settings
    assert isinstance(settings, StripesSettings)
    splits = []
    for split, count in (("train", request.n_train), ("val", request.n_val), ("test", request.n_test)):
        rng = np.random.default_rng(derive_seed(request.seed, "stripes", request.name, split))
        labels = rng.integers(0, 2, count)
        images = rng.normal(0.0, 0.1, (count, 1, 4, 4))
        for index, label in enumerate(labels):
            rows = slice(0, settings.stripe_rows)
            if label == 0:
                images[index, 0, rows, :] += settings.stripe_level
            else:
                images[index, 0, :, rows] += settings.stripe_level
        splits += [images.astype(np.float32), labels.astype(np.int64)]
    return TaskData(request.name, *splits)


register_task_family(
    TaskFamily(
        "stripes",
        load_stripes,
        task_names=_TASKS,
        n_classes=2,
        input_shape=(1, 4, 4),
        settings=StripesSettings,
        description="horizontal or vertical stripes of a set brightness and width",
    )  # fmt: skip
)
