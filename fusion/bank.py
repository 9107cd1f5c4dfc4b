"""A bank of LoRAs, one per source task: building it, and saving/loading it as safetensors plus a JSON manifest.

On disk a bank is a directory with `bank.safetensors` (tensors keyed `<source task>/<layer>/A` and `.../B`) and
`manifest.json` (format name and version, rank, alpha, target modules, the ordered source tasks, and every
layer's shape). Loading checks the manifest against the tensors and names the first problem it finds.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from crossbar import derive_seed
from energy import LedgerScope
from fusion.lora import attach_lora, detach_lora, extract_lora, train_lora
from fusion.params import LayerShape
from simutil import atomic_write_bytes, atomic_write_text

__all__ = ["BANK_FORMAT", "BANK_FORMAT_VERSION", "LoRABank", "build_bank"]

BANK_FORMAT = "crossbar-sim-lora-bank"
BANK_FORMAT_VERSION = 1
TENSORS_FILE = "bank.safetensors"
MANIFEST_FILE = "manifest.json"


def _check_task_name(task: object) -> str:
    if not isinstance(task, str) or not task or task != task.strip() or "/" in task:
        raise ValueError(f"bank entry name must be a non-empty string without '/' or surrounding spaces, got {task!r}")
    return task


class LoRABank:
    """Ordered LoRAs of equal rank and alpha on the same layers: source task -> {layer name: (A, B)}.

    A is (rank x d_in), B is (d_out x rank); the adapted weight of entry i is W0 + (alpha / rank) B_i A_i.
    """

    def __init__(
        self,
        rank: int,
        alpha: float,
        target_modules: Sequence[str],
        entries: Mapping[str, Mapping[str, tuple[torch.Tensor, torch.Tensor]]] | None = None,
    ) -> None:
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"bank rank must be a positive integer, got {rank!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"bank alpha must be a finite number > 0, got {alpha!r}")
        if isinstance(target_modules, str) or not all(isinstance(t, str) and t for t in target_modules):
            raise ValueError(f"bank target_modules must be a list of module names, got {target_modules!r}")
        self.rank = rank
        self.alpha = float(alpha)
        self.target_modules = tuple(target_modules)
        self.entries: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
        self._shapes: dict[str, LayerShape] = {}
        for task, lora in (entries or {}).items():
            self.add(task, lora)

    # --- building ----------------------------------------------------------------------------------------
    def add(self, task: str, lora: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Append one source task's LoRA (layer name -> (A, B)); layers and shapes must match the bank's."""
        _check_task_name(task)
        if task in self.entries:
            raise ValueError(f"bank already has an entry {task!r}")
        if not lora:
            raise ValueError(f"bank entry {task!r} has no layers")
        if self._shapes and set(lora) != set(self._shapes):
            missing = sorted(set(self._shapes) - set(lora))
            extra = sorted(set(lora) - set(self._shapes))
            raise ValueError(f"bank entry {task!r} has different layers: missing {missing}, unexpected {extra}")
        stored: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        shapes: dict[str, LayerShape] = {}
        for layer, pair in lora.items():
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError(f"bank entry {task!r} layer {layer!r}: expected an (A, B) pair")
            a, b = (torch.as_tensor(t).detach().to(torch.float32).contiguous().clone() for t in pair)
            if a.dim() != 2 or b.dim() != 2 or a.shape[0] != self.rank or b.shape[1] != self.rank:
                raise ValueError(
                    f"bank entry {task!r} layer {layer!r}: A must be ({self.rank}, d_in) and B (d_out, {self.rank}), "
                    f"got A {tuple(a.shape)} and B {tuple(b.shape)}"
                )
            if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
                raise ValueError(f"bank entry {task!r} layer {layer!r}: A and B must be finite")
            shape = LayerShape(layer, d_in=a.shape[1], d_out=b.shape[0])
            if layer in self._shapes and self._shapes[layer] != shape:
                old = self._shapes[layer]
                raise ValueError(
                    f"bank entry {task!r} layer {layer!r} is {shape.d_out}x{shape.d_in}, "
                    f"other entries have {old.d_out}x{old.d_in}"
                )
            stored[layer] = (a, b)
            shapes[layer] = shape
        self.entries[task] = {layer: stored[layer] for layer in (self._shapes or shapes)}
        self._shapes = self._shapes or shapes

    def select(self, tasks: Iterable[str]) -> LoRABank:
        """A bank with only the named entries, in the given order."""
        tasks = list(tasks)
        unknown = [t for t in tasks if t not in self.entries]
        if unknown:
            raise ValueError(f"bank has no entries {unknown}; entries: {self.source_tasks}")
        return LoRABank(self.rank, self.alpha, self.target_modules, {t: self.entries[t] for t in tasks})

    # --- views -------------------------------------------------------------------------------------------
    @property
    def scale(self) -> float:
        """s = alpha / rank."""
        return self.alpha / self.rank

    @property
    def source_tasks(self) -> list[str]:
        return list(self.entries)

    @property
    def n_entries(self) -> int:
        return len(self.entries)

    @property
    def layer_names(self) -> list[str]:
        return list(self._shapes)

    def layer_shapes(self) -> list[LayerShape]:
        return list(self._shapes.values())

    def stacked(self, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(A_stack, B_stack) of one layer: A_i stacked by rows (N*r x d_in), B_i side by side (d_out x N*r)."""
        if layer not in self._shapes:
            raise ValueError(f"bank has no layer {layer!r}; layers: {self.layer_names}")
        if not self.entries:
            raise ValueError("bank is empty")
        a = torch.cat([self.entries[t][layer][0] for t in self.entries], dim=0)
        b = torch.cat([self.entries[t][layer][1] for t in self.entries], dim=1)
        return a, b

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return (
            f"LoRABank({self.n_entries} entries, rank={self.rank}, alpha={self.alpha:g}, "
            f"{len(self._shapes)} layers, targets={list(self.target_modules)})"
        )

    # --- files -------------------------------------------------------------------------------------------
    def manifest(self) -> dict[str, object]:
        return {
            "format": BANK_FORMAT,
            "format_version": BANK_FORMAT_VERSION,
            "rank": self.rank,
            "alpha": self.alpha,
            "target_modules": list(self.target_modules),
            "source_tasks": self.source_tasks,
            "layers": {s.name: {"d_in": s.d_in, "d_out": s.d_out} for s in self._shapes.values()},
            "tensors": TENSORS_FILE,
        }

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write `bank.safetensors` and `manifest.json` into `directory` (created; files written atomically)."""
        if not self.entries:
            raise ValueError("cannot save an empty bank")
        directory = Path(directory)
        tensors = {
            f"{task}/{layer}/{part}": tensor
            for task, lora in self.entries.items()
            for layer, pair in lora.items()
            for part, tensor in zip("AB", pair)
        }
        atomic_write_bytes(directory / TENSORS_FILE, save_tensors(tensors))
        atomic_write_text(directory / MANIFEST_FILE, json.dumps(self.manifest(), indent=1) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> LoRABank:
        """Read a bank written by `save`, checking the manifest against the tensors."""
        directory = Path(directory)
        manifest_path = directory / MANIFEST_FILE
        if not manifest_path.is_file():
            raise ValueError(f"{directory}: no {MANIFEST_FILE}, not a LoRA bank directory")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{manifest_path}: not valid JSON ({error})") from None
        rank, alpha, targets, tasks, layers = _check_manifest(manifest, manifest_path)
        tensors_path = directory / TENSORS_FILE
        if not tensors_path.is_file():
            raise ValueError(f"{directory}: manifest present but {TENSORS_FILE} is missing")
        try:
            tensors = load_tensors(tensors_path.read_bytes())
        except (SafetensorError, ValueError, RuntimeError) as error:
            raise ValueError(f"{tensors_path}: not a readable safetensors file ({error})") from None
        expected = {f"{t}/{name}/{p}" for t in tasks for name in layers for p in "AB"}
        missing = sorted(expected - set(tensors))
        if missing:
            raise ValueError(
                f"{tensors_path}: {len(missing)} tensor(s) named in the manifest are missing, e.g. {missing[0]!r}"
            )
        extra = sorted(set(tensors) - expected)
        if extra:
            raise ValueError(f"{tensors_path}: {len(extra)} tensor(s) not in the manifest, e.g. {extra[0]!r}")
        entries: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
        for task in tasks:
            entries[task] = {}
            for name, (d_in, d_out) in layers.items():
                a, b = tensors[f"{task}/{name}/A"], tensors[f"{task}/{name}/B"]
                checks = ((f"{task}/{name}/A", a, (rank, d_in)), (f"{task}/{name}/B", b, (d_out, rank)))
                for key, tensor, shape in checks:
                    if tuple(tensor.shape) != shape:
                        raise ValueError(
                            f"{tensors_path}: tensor {key!r} has shape {tuple(tensor.shape)}, the manifest says {shape}"
                        )
                    if not tensor.is_floating_point():
                        raise ValueError(f"{tensors_path}: tensor {key!r} has dtype {tensor.dtype}, expected float")
                entries[task][name] = (a, b)
        try:
            return cls(rank, alpha, targets, entries)
        except ValueError as error:
            raise ValueError(f"{directory}: {error}") from None


def _check_manifest(
    manifest: object, path: Path
) -> tuple[int, float, list[str], list[str], dict[str, tuple[int, int]]]:
    def fail(key: str, problem: str) -> ValueError:
        return ValueError(f"{path}: {key}: {problem}")

    if not isinstance(manifest, dict):
        raise fail("(top level)", "expected a JSON object")
    for key in ("format", "format_version", "rank", "alpha", "target_modules", "source_tasks", "layers"):
        if key not in manifest:
            raise fail(key, "missing")
    if manifest["format"] != BANK_FORMAT:
        raise fail("format", f"expected {BANK_FORMAT!r}, got {manifest['format']!r}")
    if manifest["format_version"] != BANK_FORMAT_VERSION:
        raise fail("format_version", f"version {manifest['format_version']!r} is not supported ({BANK_FORMAT_VERSION})")
    rank = manifest["rank"]
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise fail("rank", f"expected a positive integer, got {rank!r}")
    alpha = manifest["alpha"]
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise fail("alpha", f"expected a number > 0, got {alpha!r}")
    targets = manifest["target_modules"]
    if not isinstance(targets, list) or not all(isinstance(t, str) and t for t in targets):
        raise fail("target_modules", f"expected a list of module names, got {targets!r}")
    tasks = manifest["source_tasks"]
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) and t for t in tasks):
        raise fail("source_tasks", f"expected a non-empty list of names, got {tasks!r}")
    if len(set(tasks)) != len(tasks):
        raise fail("source_tasks", "names repeat")
    for task in tasks:
        try:
            _check_task_name(task)
        except ValueError as error:
            raise fail("source_tasks", str(error)) from None
    raw_layers = manifest["layers"]
    if not isinstance(raw_layers, dict) or not raw_layers:
        raise fail("layers", "expected a non-empty object of layer name -> {d_in, d_out}")
    layers: dict[str, tuple[int, int]] = {}
    for name, shape in raw_layers.items():
        dims = [shape.get(k) if isinstance(shape, dict) else None for k in ("d_in", "d_out")]
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in dims):
            raise fail(f"layers.{name}", f"expected {{'d_in': int >= 1, 'd_out': int >= 1}}, got {shape!r}")
        layers[name] = (dims[0], dims[1])
    return rank, float(alpha), targets, tasks, layers


def build_bank(
    model: nn.Module,
    tasks: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    target_modules: Sequence[str] | str = ("q", "v"),
    rank: int = 16,
    alpha: float = 32.0,
    exclude: Sequence[str] = ("head",),
    epochs: int = 20,
    batch_size: int = 10,
    lr: float = 1e-3,
    seed: int = 0,
    ledger: LedgerScope | None = None,
    progress: bool = True,
) -> LoRABank:
    """Train one LoRA per source task on the frozen `model` (which is not modified) and collect them in a bank.

    Each task's LoRA is initialised and its batches ordered from a seed derived from `seed` and the task name.
    """
    if not tasks:
        raise ValueError("build_bank needs at least one source task")
    work = copy.deepcopy(model)
    targets = [target_modules] if isinstance(target_modules, str) else list(target_modules)
    bank = LoRABank(rank, alpha, targets)
    for task, (x, y) in tasks.items():
        _check_task_name(task)
        task_seed = derive_seed(seed, "bank", task)
        attach_lora(work, targets, rank, alpha, exclude=exclude, seed=task_seed)
        train_lora(
            work,
            x,
            y,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=task_seed,
            ledger=ledger,
            progress=progress,
            desc=f"bank {task}",
        )
        bank.add(task, extract_lora(work))
        detach_lora(work)
    return bank
