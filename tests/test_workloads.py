from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from scenarios.errors import ScenarioError
from scenarios.loading import load_scenario
from scenarios.schema import model_spec
from scenarios.tasks import DIGIT_TASKS, DIGITS_MEAN, DIGITS_STD, _digit_images
from scenarios.workloads import (
    ADAPTABLE_LAYERS,
    accuracy,
    build_model,
    build_tasks,
    digit_pools,
    digits_task,
    load_npz_task,
    train_classifier,
)

SMALL_MODEL = model_spec("transformer")(d_model=32, n_blocks=2, n_heads=2, d_ff=64, patch_size=2)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models train fastest on one thread; two threads on a busy 2-core machine can be 20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _normalised_images(indices: np.ndarray) -> np.ndarray:
    images, _ = _digit_images()
    return ((images[indices] - DIGITS_MEAN) / DIGITS_STD).astype(np.float32)


# --- digits ----------------------------------------------------------------------------------------------------
def test_pools_are_disjoint_cover_everything_and_hold_every_class() -> None:
    train, test = digit_pools(seed=3)
    _, labels = _digit_images()
    assert not set(train) & set(test)
    assert len(train) + len(test) == len(labels) == 1797
    assert 500 <= len(test) <= 560
    for pool in (train, test):
        assert set(labels[pool]) == set(range(10))
    assert not np.array_equal(digit_pools(seed=4)[1], test)


def test_test_images_come_only_from_the_test_pool() -> None:
    train, test = digit_pools(seed=0)
    task = digits_task("clean", seed=0, n_train=300, n_val=5, n_test=200)  # `clean` copies images exactly
    test_images = {image.tobytes() for image in _normalised_images(test)}
    train_images = {image.tobytes() for image in _normalised_images(train)}
    assert all(image[0].tobytes() in test_images for image in task.x_test)
    assert all(image[0].tobytes() in train_images for image in np.concatenate([task.x_train, task.x_val]))
    # few-shot train and validation examples are distinct base images while the pool lasts
    assert not {i[0].tobytes() for i in task.x_train} & {i[0].tobytes() for i in task.x_val}


@pytest.mark.parametrize("name", ["rotate_+30", "invert_noise", "elastic"])
def test_digits_task_is_deterministic_and_seed_dependent(name: str) -> None:
    first = digits_task(name, seed=5, n_train=30, n_val=5, n_test=40)
    again = digits_task(name, seed=5, n_train=30, n_val=5, n_test=40)
    other = digits_task(name, seed=6, n_train=30, n_val=5, n_test=40)
    for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(first, field), getattr(again, field))
    assert not np.array_equal(first.x_test, other.x_test)


def test_sizes_dtypes_and_label_ranges_for_every_task() -> None:
    for name in DIGIT_TASKS:
        task = digits_task(name, seed=0, n_train=12, n_val=3, n_test=20)
        assert task.x_train.shape == (12, 1, 8, 8) and task.x_val.shape == (3, 1, 8, 8)
        assert task.x_test.shape == (20, 1, 8, 8) and task.image_shape == (1, 8, 8)
        for x, y in ((task.x_train, task.y_train), (task.x_val, task.y_val), (task.x_test, task.y_test)):
            assert x.dtype == np.float32 and y.dtype == np.int64 and len(x) == len(y)
            assert np.isfinite(x).all() and y.min() >= 0 and y.max() <= 9
            pixels = x * DIGITS_STD + DIGITS_MEAN  # back to [0, 1]
            assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6


def test_each_sample_draws_its_own_transform() -> None:
    # 1200 test examples from a ~540-image pool: repeated base images must still differ after the random shift
    task = digits_task("rotate_+30", seed=0, n_train=0, n_val=0, n_test=1200)
    assert len({image.tobytes() for image in task.x_test}) == 1200


def test_shifted_tasks_differ_from_their_base_images_and_from_each_other() -> None:
    clean = digits_task("clean", seed=0, n_train=0, n_val=0, n_test=200)
    for name in ("rotate_+30", "rotate_+45", "invert", "blur", "shift", "invert_noise"):
        shifted = digits_task(name, seed=0, n_train=0, n_val=0, n_test=200)
        assert np.abs(shifted.x_test.mean(axis=0) - clean.x_test.mean(axis=0)).max() > 0.1, name


def test_unknown_digits_task_is_a_scenario_error() -> None:
    with pytest.raises(ScenarioError, match="unknown digits task 'rotate_90'"):
        digits_task("rotate_90", seed=0, n_train=1, n_val=0, n_test=1)


def test_build_tasks_uses_the_scenario_sizes() -> None:
    scenario = load_scenario("tiny")
    suite = build_tasks(scenario)
    assert suite.n_classes == 10 and suite.image_shape == (1, 8, 8)
    assert len(suite.base.x_train) == scenario.tasks.base_train_size
    assert list(suite.sources) == scenario.tasks.sources and list(suite.targets) == scenario.tasks.targets
    for task in suite.sources.values():
        assert len(task.x_train) == scenario.bank.train_size
    for task in suite.targets.values():
        assert len(task.x_train) == scenario.tasks.few_shot_train and len(task.x_val) == scenario.tasks.few_shot_val
        assert len(task.x_test) == scenario.tasks.test_size


# --- npz -------------------------------------------------------------------------------------------------------
def _arrays(n_train: int = 30, n_test: int = 12, channels: int | None = None, with_val: bool = False) -> dict:
    rng = np.random.default_rng(1)
    shape = (8, 8) if channels is None else (channels, 8, 8)
    arrays = {
        "x_train": rng.normal(size=(n_train, *shape)).astype(np.float32),
        "y_train": rng.integers(0, 4, n_train),
        "x_test": rng.normal(size=(n_test, *shape)),
        "y_test": rng.integers(0, 4, n_test).astype(np.int32),
    }
    if with_val:
        arrays["x_val"] = rng.normal(size=(6, *shape))
        arrays["y_val"] = rng.integers(0, 4, 6)
    return arrays


def _save(tmp_path: Path, arrays: dict, name: str = "task.npz") -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_npz_task_loads_and_converts(tmp_path: Path) -> None:
    path = _save(tmp_path, _arrays(channels=3))
    task = load_npz_task(path, "mine", n_train=20, n_val=5, n_test=100, patch_size=4, exact_train=True, n_classes=4)
    assert (
        task.x_train.shape == (20, 3, 8, 8) and task.x_val.shape == (5, 3, 8, 8) and task.x_test.shape == (12, 3, 8, 8)
    )
    assert task.x_test.dtype == np.float32 and task.y_test.dtype == np.int64
    np.testing.assert_array_equal(task.x_val, np.load(path)["x_train"][20:25])  # validation after the train part


def test_npz_validation_split_is_used_when_present(tmp_path: Path) -> None:
    path = _save(tmp_path, _arrays(with_val=True))
    task = load_npz_task(path, "mine", n_train=30, n_val=4, n_test=5, patch_size=2, exact_train=True)
    assert task.x_train.shape == (30, 1, 8, 8) and task.x_val.shape == (4, 1, 8, 8)
    np.testing.assert_array_equal(task.y_val, np.load(path)["y_val"][:4])


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda a: a.pop("y_train"), "missing array(s) y_train"),
        (lambda a: a.update(x_val=a["x_test"]), "has only one of x_val and y_val"),
        (lambda a: a.update(y_train=a["y_train"][:-1]), "y_train has shape (29,), expected (30,)"),
        (lambda a: a.update(y_test=a["y_test"].astype(float)), "y_test has dtype float64, expected integer"),
        (lambda a: a.update(y_test=a["y_test"] + 10), "y_test has label 13, expected labels in [0, 4)"),
        (lambda a: a.update(y_train=a["y_train"] - 5), "y_train has label -5"),
        (lambda a: a["x_train"].__setitem__((0, 0, 0), np.inf), "x_train contains NaN or infinite values"),
        (lambda a: a.update(x_test=np.zeros((12, 6, 6))), "x_test images are (1, 6, 6), expected (1, 8, 8)"),
        (lambda a: a.update(x_train=np.zeros((30, 8))), "x_train has shape (30, 8)"),
        (lambda a: a.update(x_train=np.zeros((30, 12, 12)), x_test=np.zeros((12, 12, 12))), "multiples of model.patch"),
        (lambda a: a.update(x_train=a["x_train"][:10], y_train=a["y_train"][:10]), "x_train has 10 examples"),
        (lambda a: a.update(x_test=np.zeros((0, 8, 8)), y_test=np.zeros(0, int)), "x_test is empty"),
    ],
    ids=[
        "missing_key",
        "half_val",
        "length",
        "float_labels",
        "label_range",
        "negative_label",
        "inf",
        "shape",
        "ndim",
        "patch",
        "too_few",
        "empty_test",
    ],
)
def test_npz_problems_name_the_file(tmp_path: Path, change, fragment: str) -> None:
    arrays = _arrays()
    change(arrays)
    path = _save(tmp_path, arrays, "user_task.npz")
    with pytest.raises(ScenarioError) as caught:
        load_npz_task(path, "t", n_train=20, n_val=5, n_test=10, patch_size=8, exact_train=True, n_classes=4)
    message = str(caught.value)
    assert message.startswith("user_task.npz: ") and fragment in message and "\n" not in message


def test_npz_unreadable_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "text.npz").write_text("not numpy")
    with pytest.raises(ScenarioError, match="text.npz: not a readable .npz archive"):
        load_npz_task(tmp_path / "text.npz", "t", n_train=1, n_val=0, n_test=1, patch_size=1)
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(ScenarioError, match="single.npy: is a single .npy array"):
        load_npz_task(tmp_path / "single.npy", "t", n_train=1, n_val=0, n_test=1, patch_size=1)
    with pytest.raises(ScenarioError, match="gone.npz: file not found"):
        load_npz_task(tmp_path / "gone.npz", "t", n_train=1, n_val=0, n_test=1, patch_size=1)


# --- the network -----------------------------------------------------------------------------------------------
def test_model_exposes_named_linear_layers_for_lora() -> None:
    model = build_model(SMALL_MODEL, n_classes=10, image_shape=(1, 8, 8), seed=0)
    linear = {name for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    for block in range(SMALL_MODEL.n_blocks):
        assert {f"blocks.{block}.{layer}" for layer in ADAPTABLE_LAYERS} <= linear
    assert {"embed", "head"} <= linear
    assert not any(isinstance(m, nn.MultiheadAttention) for m in model.modules())
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 10)


def test_build_model_is_seeded_and_leaves_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    first = build_model(SMALL_MODEL, 10, (1, 8, 8), seed=1).state_dict()
    second = build_model(SMALL_MODEL, 10, (1, 8, 8), seed=1).state_dict()
    other = build_model(SMALL_MODEL, 10, (1, 8, 8), seed=2).state_dict()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["blocks.0.q.weight"], other["blocks.0.q.weight"])


def test_training_is_deterministic() -> None:
    task = digits_task("clean", seed=0, n_train=200, n_val=0, n_test=1)
    runs = []
    for _ in range(2):
        model = build_model(SMALL_MODEL, 10, (1, 8, 8), seed=0)
        history = train_classifier(
            model, task.x_train, task.y_train, epochs=2, lr=5e-3, batch_size=16, seed=0, progress=False
        )
        runs.append((history, model.state_dict()))
    (history, weights), (history_again, weights_again) = runs
    assert history == history_again
    assert all(torch.equal(weights[k], weights_again[k]) for k in weights)


def test_base_model_learns_clean_digits_and_shift_hurts() -> None:
    clean = digits_task("clean", seed=0, n_train=800, n_val=0, n_test=300)
    rotated = digits_task("rotate_+45", seed=0, n_train=0, n_val=0, n_test=300)
    model = build_model(SMALL_MODEL, 10, (1, 8, 8), seed=0)
    history = train_classifier(
        model, clean.x_train, clean.y_train, epochs=8, lr=5e-3, batch_size=16, seed=0, progress=False
    )
    assert history[-1] < history[0] / 3
    model.train()
    clean_accuracy = accuracy(model, clean.x_test, clean.y_test, batch_size=64)
    assert model.training  # accuracy() restores the mode it found
    assert clean_accuracy > 0.7  # seeds 0-3 (blake2b data streams): 0.71-0.85; chance is 0.1
    assert accuracy(model, rotated.x_test, rotated.y_test) < clean_accuracy - 0.3


def test_train_classifier_trains_only_what_requires_grad() -> None:
    model = build_model(SMALL_MODEL, 10, (1, 8, 8), seed=0)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    model.head.weight.requires_grad_(True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = np.random.default_rng(0).normal(size=(20, 1, 8, 8)), np.arange(20) % 10
    train_classifier(model, x, y, epochs=1, lr=1e-2, batch_size=8, seed=0, schedule="constant", progress=False)
    after = model.state_dict()
    assert not torch.equal(before["head.weight"], after["head.weight"])
    assert all(torch.equal(before[k], after[k]) for k in before if k != "head.weight")
    with pytest.raises(ValueError, match="inputs but"):
        accuracy(model, x, y[:5])


def test_digital_work_between_linear_layers_is_recorded() -> None:
    """Attention scores and mixing, softmax, LayerNorm, GELU, residuals, pooling: counted per forward when a ledger
    is attached (x3 with gradients: forward plus a backward of twice its work), nothing without one."""
    from crossbar import record_all_to
    from energy import Ledger
    from scenarios.models import GELU_OPS, LAYERNORM_OPS, SOFTMAX_OPS

    spec = load_scenario("tiny").model
    model = build_model(spec, 10, (1, 8, 8), seed=0)
    batch, tokens, width, heads, d_ff = 4, 16, spec.d_model, spec.n_heads, spec.d_ff
    scores = batch * heads * tokens * tokens
    block_mults = (
        2 * scores * (width // heads)
        + scores * SOFTMAX_OPS[0]
        + 2 * batch * tokens * width * LAYERNORM_OPS[0]
        + batch * tokens * d_ff * GELU_OPS[0]
    )
    images = torch.randn(batch, 1, 8, 8)
    for grad, factor in ((False, 1), (True, 3)):
        ledger = Ledger()
        with torch.set_grad_enabled(grad), record_all_to(model, ledger.scope(phase="inference")):
            model(images)
        assert ledger.total("count", event="digital_mult", layer="blocks.0") == factor * block_mults
        assert ledger.total("count", layer="network") > 0
    recorded = ledger.total("count")
    with torch.no_grad():
        model(images)  # outside record_all_to: the ledger is detached again
    assert ledger.total("count") == recorded


def _assert_same_task(a, b) -> None:
    assert a.name == b.name and a.classes == b.classes
    for part in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, part), getattr(b, part))


def _npz_suite_scenario(tmp_path: Path):
    """An npz scenario without tasks.n_classes: the class count (5) comes from the base task's labels."""
    import yaml

    rng = np.random.default_rng(3)
    for name, top in (("a", 5), ("b", 3), ("t", 4)):
        arrays = {"x_train": rng.normal(size=(30, 8, 8)).astype(np.float32), "y_train": rng.integers(0, top, 30),
                  "x_test": rng.normal(size=(9, 8, 8)), "y_test": rng.integers(0, top, 9)}  # fmt: skip
        np.savez(tmp_path / f"{name}.npz", **arrays)
    tiny = load_scenario("tiny").resolved_dict()
    tiny["tasks"] = {"family": "npz", "base": "a", "sources": ["b"], "targets": ["t"], "few_shot_train": 20,
                     "few_shot_val": 5, "test_size": 9, "npz": {"a": "a.npz", "b": "b.npz", "t": "t.npz"}}  # fmt: skip
    path = tmp_path / "npz.yaml"
    path.write_text(yaml.safe_dump(tiny))
    return load_scenario(path)


def test_load_task_gives_each_task_as_build_tasks_does(tmp_path: Path) -> None:
    """The run's phases load one task each (`load_task`); it must be the task `build_tasks` gives in that role,
    with the class count the base task sets when neither the family nor the scenario fixes it."""
    from scenarios.workloads import class_count, load_task

    for scenario in (load_scenario("tiny"), _npz_suite_scenario(tmp_path)):
        suite = build_tasks(scenario)
        base = load_task(scenario, scenario.tasks.base, "base")
        _assert_same_task(base, suite.base)
        assert class_count(scenario, base) == suite.n_classes
        for name in scenario.tasks.sources:
            _assert_same_task(load_task(scenario, name, "source"), suite.sources[name])
        for name in scenario.tasks.targets:
            _assert_same_task(load_task(scenario, name, "target"), suite.targets[name])
    assert suite.n_classes == 5  # the npz base's labels 0..4, not a source's or the target's
