"""Task data for scenarios: the offline `digits` family of domain-shifted tasks, and user `.npz` tasks.

The `digits` family is scikit-learn's bundled 8x8 handwritten digits (1797 images, no download) under named domain
shifts. Source tasks (for the LoRA bank) and target tasks (learned few-shot) are different shifts, the targets being
variants or compositions of the sources: related to them but not identical, which is the situation LoRAFusion and
LoraHub address. Every transformed sample draws its own transform parameters (angle, noise level, ...) from a
generator seeded by (scenario seed, task name, split), so a task's data does not depend on which other tasks a
scenario lists. The 1797 base images are split once per seed into disjoint train and test pools: test examples
are transforms of test-pool images only, so no test image is ever seen in training.

Images are returned as float32 arrays of shape (N, 1, 8, 8), normalised as (x/16 - DIGITS_MEAN) / DIGITS_STD;
labels are int64 class indices.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crossbar.rng import derive_seed
from scenarios.errors import ScenarioError
from scenarios.families import FamilySettings, TaskData, TaskFamily, TaskRequest, register_task_family
from scenarios.sections import KeyedError, check_name, setting

__all__ = [
    "DIGITS_MEAN",
    "DIGITS_STD",
    "DIGITS_CLASSES",
    "DIGITS_IMAGE_SHAPE",
    "DIGIT_TASKS",
    "NPZ_REQUIRED_KEYS",
    "NpzSettings",
    "digit_pools",
    "digits_task",
    "load_npz_task",
]

DIGITS_MEAN = 0.30
"""Mean pixel value of load_digits() scaled to [0, 1] (0.305 over all 1797 images), rounded."""
DIGITS_STD = 0.40
"""Pixel standard deviation of load_digits() scaled to [0, 1] (0.376 over all images), rounded up."""
DIGITS_TEST_FRACTION = 0.3
"""Fraction of each digit class held out in the test pool (about 540 of the 1797 base images)."""
DIGITS_IMAGE_SHAPE = (1, 8, 8)
DIGITS_CLASSES = 10

Image = np.ndarray  # (8, 8) float64 in [0, 1]
Transform = Callable[[Image, np.random.Generator], Image]


# --- digits: primitive shifts ----------------------------------------------------------------------------------
# Parameter ranges are chosen so that a model trained on clean digits loses accuracy under each shift, while the
# digit stays recognisable to a person (checked by eye on the 8x8 images).


def _rotate(image: Image, angle_deg: float) -> Image:
    from scipy import ndimage

    return ndimage.rotate(image, angle_deg, reshape=False, order=1, mode="constant", cval=0.0)


def _shift(image: Image, shift_px: tuple[float, float]) -> Image:
    from scipy import ndimage

    return ndimage.shift(image, shift_px, order=1, mode="constant", cval=0.0)


def _random_direction_shift(rng: np.random.Generator, low_px: float, high_px: float) -> tuple[float, float]:
    radius_px = rng.uniform(low_px, high_px)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    return radius_px * math.sin(angle), radius_px * math.cos(angle)


def _zoom(image: Image, scale: float) -> Image:
    """Scale the image content by `scale` about the centre (scale < 1 shrinks the digit)."""
    from scipy import ndimage

    centre = (np.array(image.shape) - 1) / 2.0
    return ndimage.affine_transform(image, np.eye(2) / scale, offset=centre - centre / scale, order=1, cval=0.0)


def rotate_pos30(image: Image, rng: np.random.Generator) -> Image:
    return _rotate(image, rng.uniform(25.0, 35.0))


def rotate_neg30(image: Image, rng: np.random.Generator) -> Image:
    return _rotate(image, rng.uniform(-35.0, -25.0))


def rotate_pos45(image: Image, rng: np.random.Generator) -> Image:
    return _rotate(image, rng.uniform(40.0, 50.0))


def rotate_neg45(image: Image, rng: np.random.Generator) -> Image:
    return _rotate(image, rng.uniform(-50.0, -40.0))


def invert(image: Image, rng: np.random.Generator) -> Image:
    return 1.0 - image * rng.uniform(0.85, 1.0)


def gaussian_noise(image: Image, rng: np.random.Generator) -> Image:
    return image + rng.normal(0.0, rng.uniform(0.2, 0.35), size=image.shape)


def blur(image: Image, rng: np.random.Generator) -> Image:
    from scipy import ndimage

    return ndimage.gaussian_filter(image, sigma=rng.uniform(0.5, 0.8), mode="constant", cval=0.0)


def shift(image: Image, rng: np.random.Generator) -> Image:
    return _shift(image, _random_direction_shift(rng, 1.0, 1.5))


def zoom_out(image: Image, rng: np.random.Generator) -> Image:
    return _zoom(image, rng.uniform(0.6, 0.75))


def low_contrast(image: Image, rng: np.random.Generator) -> Image:
    return rng.uniform(0.3, 0.5) + rng.uniform(0.2, 0.35) * image


def elastic(image: Image, rng: np.random.Generator) -> Image:
    """Smooth random displacement field, largest displacement 1.0-1.5 px (Simard et al. 2003 style)."""
    from scipy import ndimage

    fields = [ndimage.gaussian_filter(rng.uniform(-1.0, 1.0, image.shape), 1.5) for _ in range(2)]
    largest = max(float(np.abs(f).max()) for f in fields) or 1.0
    scale_px = rng.uniform(1.0, 1.5) / largest
    rows, cols = np.meshgrid(np.arange(image.shape[0]), np.arange(image.shape[1]), indexing="ij")
    coords = [rows + fields[0] * scale_px, cols + fields[1] * scale_px]
    return ndimage.map_coordinates(image, coords, order=1, mode="constant", cval=0.0)


def salt_pepper(image: Image, rng: np.random.Generator) -> Image:
    out = image.copy()
    hit = rng.random(image.shape) < rng.uniform(0.15, 0.25)
    out[hit] = rng.integers(0, 2, size=int(hit.sum())).astype(float)
    return out


def shear(image: Image, rng: np.random.Generator) -> Image:
    """Horizontal shear about the centre, factor 0.4-0.6 with a random sign."""
    from scipy import ndimage

    factor = rng.uniform(0.4, 0.6) * rng.choice([-1.0, 1.0])
    matrix = np.array([[1.0, 0.0], [factor, 1.0]])
    centre = (np.array(image.shape) - 1) / 2.0
    return ndimage.affine_transform(image, matrix, offset=centre - matrix @ centre, order=1, cval=0.0)


def _identity(image: Image, rng: np.random.Generator) -> Image:
    return image


def _mild(image: Image, rng: np.random.Generator) -> Image:
    """A mild mix for a robust base model: rotation within +-10 deg, sub-pixel shift, faint noise."""
    image = _rotate(image, rng.uniform(-10.0, 10.0))
    image = _shift(image, _random_direction_shift(rng, 0.0, 0.5))
    return image + rng.normal(0.0, 0.03, size=image.shape)


def _rotate_either_30(image: Image, rng: np.random.Generator) -> Image:
    return _rotate(image, rng.choice([-1.0, 1.0]) * rng.uniform(25.0, 35.0))


def _noise_light(image: Image, rng: np.random.Generator) -> Image:
    return image + rng.normal(0.0, rng.uniform(0.15, 0.25), size=image.shape)


def _compose(*steps: Transform) -> Transform:
    def composed(image: Image, rng: np.random.Generator) -> Image:
        for step in steps:
            image = step(image, rng)
        return image

    return composed


@dataclass(frozen=True)
class DigitShift:
    """A named domain shift of the digits family: a per-sample random transform and what it does."""

    transform: Transform
    description: str


DIGIT_TASKS: dict[str, DigitShift] = {
    # base tasks
    "clean": DigitShift(_identity, "the unmodified digits"),
    "mild": DigitShift(_mild, "rotation +-10 deg, shift <= 0.5 px, noise sigma 0.03"),
    # source tasks: one shift each
    "rotate_+30": DigitShift(rotate_pos30, "rotation by +25..+35 deg"),
    "rotate_-30": DigitShift(rotate_neg30, "rotation by -35..-25 deg"),
    "invert": DigitShift(invert, "inverted intensities (1 - x * 0.85..1)"),
    "gaussian_noise": DigitShift(gaussian_noise, "additive Gaussian noise, sigma 0.2..0.35"),
    "blur": DigitShift(blur, "Gaussian blur, sigma 0.5..0.8 px"),
    "shift": DigitShift(shift, "translation by 1..1.5 px in a random direction"),
    "zoom_out": DigitShift(zoom_out, "digit shrunk to 60..75 % about the centre"),
    "low_contrast": DigitShift(low_contrast, "background 0.3..0.5, contrast 0.2..0.35"),
    "elastic": DigitShift(elastic, "smooth elastic distortion, up to 1..1.5 px"),
    "salt_pepper": DigitShift(salt_pepper, "15..25 % of pixels set to black or white"),
    "shear": DigitShift(shear, "horizontal shear, factor +-0.4..0.6"),
    # target tasks: variants and compositions of the sources
    "rotate_+45": DigitShift(rotate_pos45, "rotation by +40..+50 deg"),
    "rotate_-45": DigitShift(rotate_neg45, "rotation by -50..-40 deg"),
    "invert_noise": DigitShift(_compose(invert, _noise_light), "inverted, then noise sigma 0.15..0.25"),
    "blur_shift": DigitShift(_compose(blur, shift), "blurred, then shifted 1..1.5 px"),
    "rotate_noise": DigitShift(_compose(_rotate_either_30, _noise_light), "rotated +-25..35 deg, then noise"),
    "zoom_rotate": DigitShift(_compose(zoom_out, _rotate_either_30), "shrunk, then rotated +-25..35 deg"),
    "contrast_blur": DigitShift(_compose(low_contrast, blur), "low contrast, then blurred"),
}
"""The digits family by name (see the module docstring)."""


# --- digits: pools and generation ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _digit_images() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as float64 (N, 8, 8) in [0, 1] and int64 labels (read-only; scikit-learn's bundled copy)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float64)
    labels = bunch.target.astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _generator(seed: int, *labels: str) -> np.random.Generator:
    """A generator for (seed, labels...), seeded by the project's one derivation (`crossbar.derive_seed`)."""
    return np.random.default_rng(derive_seed(seed, *labels))


def digit_pools(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint (train_pool, test_pool) indices into the 1797 base images, stratified by class."""
    _, labels = _digit_images()
    rng = _generator(seed, "digits", "pools")
    train, test = [], []
    for digit in range(DIGITS_CLASSES):
        members = rng.permutation(np.flatnonzero(labels == digit))
        n_test = round(DIGITS_TEST_FRACTION * len(members))
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _draw_indices(pool: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` pool entries as consecutive shuffles of the pool: each image is used once before any repeats."""
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    rounds = -(-count // len(pool))
    return np.concatenate([rng.permutation(pool) for _ in range(rounds)])[:count]


def _render(name: str, indices: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    images, labels = _digit_images()
    transform = DIGIT_TASKS[name].transform
    out = np.empty((len(indices), *DIGITS_IMAGE_SHAPE), dtype=np.float32)
    for row, index in enumerate(indices):
        shifted = np.clip(transform(images[index], rng), 0.0, 1.0)
        out[row, 0] = (shifted - DIGITS_MEAN) / DIGITS_STD
    return out, labels[indices].copy()


def digits_task(name: str, *, seed: int, n_train: int, n_val: int, n_test: int) -> TaskData:
    """Generate one digits task. Train and val come from the train pool (distinct base images while the pool
    lasts), test from the test pool; each sample gets its own transform parameters."""
    if name not in DIGIT_TASKS:
        raise ScenarioError(f"unknown digits task {name!r}, expected one of {', '.join(DIGIT_TASKS)}")
    train_pool, test_pool = digit_pools(seed)
    picks = _draw_indices(train_pool, n_train + n_val, _generator(seed, "digits", name, "pick-train"))
    x_train, y_train = _render(name, picks[:n_train], _generator(seed, "digits", name, "train"))
    x_val, y_val = _render(name, picks[n_train:], _generator(seed, "digits", name, "val"))
    test_picks = _draw_indices(test_pool, n_test, _generator(seed, "digits", name, "pick-test"))
    x_test, y_test = _render(name, test_picks, _generator(seed, "digits", name, "test"))
    return TaskData(name, x_train, y_train, x_val, y_val, x_test, y_test)


# --- npz tasks -------------------------------------------------------------------------------------------------
NPZ_REQUIRED_KEYS = ("x_train", "y_train", "x_test", "y_test")
NPZ_OPTIONAL_KEYS = ("x_val", "y_val")
NPZ_UNUSED_BYTES_MAX = 2**30
"""Largest npz member (bytes, as its header declares) loaded although it holds more rows than the scenario reads:
`np.load` reads a member whole, so a larger one is refused from its header before any of its data is read."""


def _check_npz_sizes(path: Path, n_train: int, n_val: int, n_test: int) -> str | None:
    """From the member headers alone (nothing is decompressed): the problem with a member that holds more rows than
    the scenario reads and more than NPZ_UNUSED_BYTES_MAX bytes, or more bytes in the rows it reads than the
    machine has memory; None if there is none (or the archive is unreadable: loading it says so)."""
    from scenarios.budget import available_memory_bytes, human_bytes, read_npz_headers

    try:
        headers = read_npz_headers(path)
    except (OSError, ValueError):
        return None
    needed = {"train": n_train + (0 if "x_val" in headers else n_val), "val": n_val, "test": n_test}
    for key in (*NPZ_REQUIRED_KEYS, *NPZ_OPTIONAL_KEYS):
        shape, dtype = headers.get(key, ((), None))
        if not shape or min(shape) < 0 or dtype is None or dtype.hasobject:
            continue  # scalars, bad shapes and object arrays are refused when loaded, in their own words
        rows, size = needed[key[2:]], float(min(math.prod(shape), 2**200)) * dtype.itemsize
        read = size * min(rows, shape[0]) / max(shape[0], 1)
        declared = f"{key} declares shape {shape} {dtype} ({human_bytes(size)})"
        if shape[0] > rows and size > NPZ_UNUSED_BYTES_MAX:
            return (f"{declared}, expected at most {rows} rows (what the scenario reads from it) or at most "
                    f"{human_bytes(NPZ_UNUSED_BYTES_MAX)}; cut the file to the rows used")  # fmt: skip
        available = available_memory_bytes()
        if available is not None and read > available:
            return (f"{declared}: the {min(rows, shape[0])} rows the scenario reads need {human_bytes(read)}, "
                    f"expected at most the {human_bytes(available)} of memory available")  # fmt: skip
    return None


def load_npz_task(
    path: str | Path,
    name: str,
    *,
    n_train: int,
    n_val: int,
    n_test: int,
    patch_size: int,
    exact_train: bool = False,
    n_classes: int | None = None,
) -> TaskData:
    """Load and validate a user's task file: arrays x_train, y_train, x_test, y_test (optional x_val, y_val).

    Images are (N, H, W) or (N, C, H, W) with H and W multiples of `patch_size`; labels are integers in
    [0, n_classes). Takes the first `n_train` training examples (exactly that many if `exact_train`, else at most)
    and the first `n_test` test examples at most; validation examples come from x_val, or else from the training
    examples after the first `n_train`. Raises ScenarioError naming the file and the problem.
    """
    path = Path(path)

    def fail(problem: str) -> ScenarioError:
        return ScenarioError(f"{path.name}: {problem}")

    arrays = _read_npz_arrays(path, n_train, n_val, n_test, fail)
    _check_npz_splits(arrays, patch_size, n_classes, fail)
    n_x_train = len(arrays["x_train"])
    needed = n_train + (0 if "x_val" in arrays else n_val) if exact_train else 1
    if n_x_train < needed:
        raise fail(f"x_train has {n_x_train} examples, expected at least {needed}")
    if "x_val" in arrays and len(arrays["x_val"]) < n_val:
        raise fail(f"x_val has {len(arrays['x_val'])} examples, expected at least {n_val} (tasks.few_shot_val)")
    if len(arrays["x_test"]) == 0:
        raise fail("x_test is empty, expected at least one test example")

    n_train = min(n_train, n_x_train if "x_val" in arrays else max(1, n_x_train - n_val))
    if "x_val" in arrays:
        x_val, y_val = arrays["x_val"][:n_val], arrays["y_val"][:n_val]
    else:
        x_val, y_val = arrays["x_train"][n_train : n_train + n_val], arrays["y_train"][n_train : n_train + n_val]

    def as_x(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x, dtype=np.float32)

    def as_y(y: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(y, dtype=np.int64)

    return TaskData(
        name,
        as_x(arrays["x_train"][:n_train]),
        as_y(arrays["y_train"][:n_train]),
        as_x(x_val),
        as_y(y_val),
        as_x(arrays["x_test"][:n_test]),
        as_y(arrays["y_test"][:n_test]),
    )


def _read_npz_arrays(
    path: Path, n_train: int, n_val: int, n_test: int, fail: Callable[[str], ScenarioError]
) -> dict[str, np.ndarray]:
    """The task file's arrays by key, after its headers were checked against the sizes the scenario reads."""
    if not path.is_file():
        raise fail("file not found, expected an .npz file with arrays " + ", ".join(NPZ_REQUIRED_KEYS))
    too_large = _check_npz_sizes(path, n_train, n_val, n_test)
    if too_large:
        raise fail(too_large)
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception:  # zip, pickle-refusal and OS errors: the file is not a readable archive
        raise fail("not a readable .npz archive, expected a file written by numpy.savez") from None
    if isinstance(archive, np.ndarray):
        raise fail("is a single .npy array, expected an .npz archive of named arrays")
    with archive:
        present = set(archive.files)
        missing = [key for key in NPZ_REQUIRED_KEYS if key not in present]
        if missing:
            raise fail(
                f"missing array(s) {', '.join(missing)}, expected {', '.join(NPZ_REQUIRED_KEYS)} "
                "(and optionally x_val, y_val)"
            )
        if ("x_val" in present) != ("y_val" in present):
            raise fail("has only one of x_val and y_val, expected both or neither")
        try:
            return {key: archive[key] for key in (*NPZ_REQUIRED_KEYS, *NPZ_OPTIONAL_KEYS) if key in present}
        except Exception as error:  # object arrays (pickles) or a damaged member
            raise fail(f"an array cannot be read ({type(error).__name__}), expected plain numeric arrays") from None


def _check_npz_splits(
    arrays: dict[str, np.ndarray], patch_size: int, n_classes: int | None, fail: Callable[[str], ScenarioError]
) -> None:
    """Check every split's images and labels (shape, dtype, finiteness, label range, patch size); (N, H, W)
    images become (N, 1, H, W) in `arrays`."""
    splits = ("train", "val", "test") if "x_val" in arrays else ("train", "test")
    image_shape: tuple[int, ...] | None = None
    for split in splits:
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim not in (3, 4):
            raise fail(f"x_{split} has shape {x.shape}, expected (N, H, W) or (N, C, H, W)")
        if x.ndim == 3:
            x = x[:, None]
        if x.dtype.kind not in "iuf":
            raise fail(f"x_{split} has dtype {x.dtype}, expected numbers")
        if not np.all(np.isfinite(x)):
            raise fail(f"x_{split} contains NaN or infinite values, expected finite numbers")
        if image_shape is None:
            image_shape = x.shape[1:]
        elif x.shape[1:] != image_shape:
            raise fail(f"x_{split} images are {x.shape[1:]}, expected {image_shape} like x_train")
        if y.ndim != 1 or len(y) != len(x):
            raise fail(f"y_{split} has shape {y.shape}, expected ({len(x)},): one label per x_{split} image")
        if y.dtype.kind not in "iu":
            raise fail(f"y_{split} has dtype {y.dtype}, expected integer class labels")
        if len(y) and (y.min() < 0 or (n_classes is not None and y.max() >= n_classes)):
            bad = int(y.min()) if y.min() < 0 else int(y.max())
            expected = f"[0, {n_classes})" if n_classes is not None else ">= 0"
            raise fail(f"y_{split} has label {bad}, expected labels in {expected}")
        arrays[f"x_{split}"] = x
    assert image_shape is not None
    height, width = image_shape[1:]
    if height % patch_size or width % patch_size:
        raise fail(f"images are {height}x{width}, expected sides that are multiples of model.patch_size={patch_size}")


# --- the two built-in families --------------------------------------------------------------------------------
def _load_digits(request: TaskRequest) -> TaskData:
    return digits_task(
        request.name, seed=request.seed, n_train=request.n_train, n_val=request.n_val, n_test=request.n_test
    )


@dataclass(frozen=True)
class NpzSettings(FamilySettings):
    """The `npz` family's own `tasks:` key: which file holds which task."""

    npz: dict[str, str] = setting(doc="Task name -> .npz path (relative to the scenario file) with x_train, "
                                  "y_train, x_test, y_test and optionally x_val, y_val.", path=True)  # fmt: skip

    def check(self) -> None:
        if not self.npz:
            raise KeyedError(("npz",), self.npz, "a mapping of task name -> .npz file for family 'npz'")
        for name in self.npz:  # task names become checkpoint file names
            check_name(("npz",), name)

    def named_tasks(self) -> tuple[tuple[str, ...], str]:
        return tuple(self.npz), "the tasks named in tasks.npz"


def _load_npz(request: TaskRequest) -> TaskData:
    files = request.settings.npz if isinstance(request.settings, NpzSettings) else {}
    if request.name not in files:
        raise ScenarioError(f"tasks.npz: no file for task {request.name!r}")
    try:  # kinds without patches (cnn) take any image size
        return load_npz_task(
            files[request.name], request.name, n_train=request.n_train, n_val=request.n_val, n_test=request.n_test,
            patch_size=getattr(request.scenario.model, "patch_size", 1), exact_train=request.role == "target",
            n_classes=request.n_classes,
        )  # fmt: skip
    except ScenarioError as error:
        raise ScenarioError(f"tasks.npz.{request.name}: {error}") from None


_TRAINED = ("transformer", "cnn")
"""The model kinds that serve image families (trained on the base task)."""
DIGITS = register_task_family(
    TaskFamily("digits", _load_digits, task_names=tuple(DIGIT_TASKS), n_classes=DIGITS_CLASSES,
               input_shape=DIGITS_IMAGE_SHAPE, model_kinds=_TRAINED,
               description="scikit-learn's bundled 8x8 digits under named domain shifts (offline)")
)  # fmt: skip
NPZ = register_task_family(
    TaskFamily("npz", _load_npz, accepts_n_classes=True, check_on_load=True, model_kinds=_TRAINED,
               settings=NpzSettings, description="the user's .npz files, one per task, named in tasks.npz")
)  # fmt: skip
