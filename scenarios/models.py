"""The scenario's base network: a small vision transformer built from plain `nn.Linear` layers, and its training.

Every projection is an `nn.Linear` with a fixed name inside each block: attention `q`, `k`, `v`, `o` and MLP
`fc1`, `fc2` (module paths `blocks.<i>.q`, ...). LoRA banks target layers by these names and
`crossbar.convert_to_analog` can swap any of them for an analog layer; `nn.MultiheadAttention` is avoided on
purpose because its projections are not `nn.Linear` modules. Training is on CPU and deterministic given the seed:
the model's initial weights come from a forked torch RNG and batches are shuffled by a private `torch.Generator`,
so nothing reads or changes torch's global random state.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from fusion.loop import as_tensors

ADAPTABLE_LAYERS: tuple[str, ...] = ("q", "k", "v", "o", "fc1", "fc2")
"""Names of the `nn.Linear` layers inside each transformer block that a LoRA bank may target."""

__all__ = [
    "ADAPTABLE_LAYERS",
    "ConvClassifier",
    "PatchTransformer",
    "TransformerBlock",
    "accuracy",
    "build_model",
    "train_classifier",
]

# Digital work between the linear layers, per element (FP32 operations, priced by the ledger's cost table).
# Conventions (stated once; the same for every method, so they shift all energies alike):
LAYERNORM_OPS = (3, 3)
"""(mults, adds) per element: mean (add), variance (mult, add), normalise (add, mult), affine (mult, add)."""
GELU_OPS = (7, 2)
"""(mults, adds) per element of the tanh approximation 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), counting
tanh as one multiply-class operation."""
SOFTMAX_OPS = (3, 1)
"""(mults, adds) per attention score: the 1/sqrt(d_head) scale, exp (one multiply-class operation), the sum, and
the division by it."""
BACKWARD_FACTOR = 2
"""When gradients are taken, the backward pass of these operations is counted as twice the forward work (the usual
estimate for matmuls and elementwise ops). Activation buffers are not counted as SRAM traffic."""


def record_digital_ops(module: nn.Module, layer: str, mults: float, adds: float) -> None:
    """Record `mults` and `adds` (FP32) in the ledger the module holds (set by `crossbar.record_all_to`), with the
    backward pass's share when gradients are being taken."""
    ledger = module.__dict__.get("ledger")
    if ledger is None:
        return
    from fusion.accounting import record_digital

    factor = 1 + (BACKWARD_FACTOR if torch.is_grad_enabled() else 0)
    record_digital(ledger, layer, mults=factor * mults, adds=factor * adds)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x)), with GELU in the MLP."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be a multiple of n_heads={n_heads}")
        self.n_heads = n_heads
        self.norm1 = nn.LayerNorm(d_model)
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.o = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)
        self.ledger = None
        """When set (by `crossbar.record_all_to`), the block records its digital work: attention scores and mixing,
        softmax, LayerNorms, GELU and residual adds."""
        self.name = ""

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        return x.view(batch, tokens, self.n_heads, width // self.n_heads).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        attended = F.scaled_dot_product_attention(
            self._heads(self.q(h)), self._heads(self.k(h)), self._heads(self.v(h))
        )
        x = x + self.o(attended.transpose(1, 2).reshape(x.shape))
        out = x + self.fc2(F.gelu(self.fc1(self.norm2(x))))
        if self.__dict__.get("ledger") is not None:
            batch, tokens, width = x.shape
            d_ff = self.fc2.in_features
            scores = batch * self.n_heads * tokens * tokens
            macs = 2 * scores * (width // self.n_heads)  # Q K^T and the attention-weighted sum of V
            elements = batch * tokens * width
            mults = (
                macs + scores * SOFTMAX_OPS[0] + 2 * elements * LAYERNORM_OPS[0] + batch * tokens * d_ff * GELU_OPS[0]
            )
            adds = (
                macs + scores * SOFTMAX_OPS[1] + 2 * elements * LAYERNORM_OPS[1]
                + batch * tokens * d_ff * GELU_OPS[1] + 2 * elements  # two residual adds
            )  # fmt: skip
            record_digital_ops(self, self.name or "block", mults, adds)
        return out


class PatchTransformer(nn.Module):
    """Image classifier: non-overlapping patches -> linear embedding + learned positions -> blocks -> LayerNorm
    -> mean over tokens -> linear `head`."""

    def __init__(
        self,
        *,
        image_shape: tuple[int, int, int],
        patch_size: int,
        d_model: int,
        n_blocks: int,
        n_heads: int,
        d_ff: int,
        n_classes: int,
    ) -> None:
        super().__init__()
        channels, height, width = image_shape
        if height % patch_size or width % patch_size:
            raise ValueError(f"image {height}x{width} is not a whole number of {patch_size}x{patch_size} patches")
        self.image_shape = tuple(image_shape)
        self.patch_size = patch_size
        n_patches = (height // patch_size) * (width // patch_size)
        self.embed = nn.Linear(channels * patch_size * patch_size, d_model)
        self.position = nn.Parameter(torch.randn(1, n_patches, d_model) * 0.02)
        self.blocks = nn.ModuleList(TransformerBlock(d_model, n_heads, d_ff) for _ in range(n_blocks))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)
        for index, block in enumerate(self.blocks):
            block.name = f"blocks.{index}"
        self.ledger = None
        """When set (by `crossbar.record_all_to`), records the position add, final LayerNorm and mean pooling."""

    def patches(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, n_patches, C * p * p), patches in row-major order."""
        size = self.patch_size
        batch, channels = images.shape[:2]
        grid = images.unfold(2, size, size).unfold(3, size, size)  # B, C, H/p, W/p, p, p
        return grid.permute(0, 2, 3, 1, 4, 5).reshape(batch, -1, channels * size * size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.embed(self.patches(images)) + self.position
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.norm(x).mean(dim=1))
        if self.__dict__.get("ledger") is not None:
            batch, tokens, width = x.shape
            elements = batch * tokens * width
            mults = elements * LAYERNORM_OPS[0] + batch * width  # final LayerNorm, 1/tokens of the mean
            adds = elements * (1 + LAYERNORM_OPS[1] + 1)  # position add, final LayerNorm, mean's sum
            record_digital_ops(self, "network", mults, adds)
        return logits


class ConvClassifier(nn.Module):
    """`model.kind: cnn`: conv 3x3 (d_model / 2 channels, ReLU), conv 3x3 stride 2 (d_model channels, ReLU), global
    average pooling, a residual MLP h + fc2(GELU(fc1(h))) (the layers a LoRA bank adapts) and the linear head.
    `convert_to_analog` puts both convs (`AnalogConv2d`) and all linear layers on arrays."""

    def __init__(self, image_shape: tuple[int, int, int], d_model: int, d_ff: int, n_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(image_shape[0], max(1, d_model // 2), 3, padding=1)
        self.conv2 = nn.Conv2d(max(1, d_model // 2), d_model, 3, stride=2, padding=1)
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)
        self.head = nn.Linear(d_model, n_classes)
        self.ledger = None
        """When set (by `crossbar.record_all_to`), records the ReLUs (one add-class compare per element), the
        pooling, GELU and the residual add."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.conv1(images))
        b = F.relu(self.conv2(a))
        pooled = b.mean(dim=(2, 3))
        hidden = F.gelu(self.fc1(pooled), approximate="tanh")
        logits = self.head(pooled + self.fc2(hidden))
        if self.__dict__.get("ledger") is not None:
            mults = hidden.numel() * GELU_OPS[0] + pooled.numel()  # GELU; 1/pixels of the mean
            adds = a.numel() + 2 * b.numel() + hidden.numel() * GELU_OPS[1] + pooled.numel()  # ReLUs, sum, residual
            record_digital_ops(self, "network", mults, adds)
        return logits


def build_model(model_cfg: Any, n_classes: int, image_shape: tuple[int, int, int], seed: int) -> nn.Module:
    """A freshly initialised classifier for `model_cfg` (the scenario's `model` section, a `scenarios.schema.ModelSpec`:
    not imported here, so that the schema may import this module); weights depend only on
    `seed` (torch's global RNG is forked, not reseeded)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if getattr(model_cfg, "kind", "transformer") == "cnn":
            return ConvClassifier(tuple(image_shape), model_cfg.d_model, model_cfg.d_ff, n_classes)  # type: ignore[arg-type]
        return PatchTransformer(
            image_shape=tuple(image_shape),  # type: ignore[arg-type]
            patch_size=model_cfg.patch_size,
            d_model=model_cfg.d_model,
            n_blocks=model_cfg.n_blocks,
            n_heads=model_cfg.n_heads,
            d_ff=model_cfg.d_ff,
            n_classes=n_classes,
        )


def train_classifier(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    weight_decay: float = 0.0,
    schedule: Literal["cosine", "constant"] = "cosine",
    desc: str = "train",
    progress: bool = True,
) -> list[float]:
    """Train the parameters of `model` that require grad with Adam on cross-entropy; returns the mean loss per epoch.

    Deterministic given `seed` and the model's initial state (CPU, no dropout; batch order from a private
    generator). `schedule="cosine"` decays the learning rate from `lr` to zero over all steps, which lets short
    runs converge without tuning; `"constant"` keeps it at `lr`.
    """
    x_tensor, y_tensor = as_tensors(x, y)
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError("model has no trainable parameters")
    optimizer = torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(x_tensor) / batch_size)
    total_steps = max(1, epochs * steps_per_epoch)

    def lr_factor(step: int) -> float:
        if schedule == "constant":
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    generator = torch.Generator().manual_seed(seed)
    history: list[float] = []
    was_training = model.training
    model.train()
    with tqdm(total=total_steps, desc=desc, unit="step", disable=not progress, leave=False) as bar:
        for _ in range(epochs):
            order = torch.randperm(len(x_tensor), generator=generator)
            losses = []
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                loss = F.cross_entropy(model(x_tensor[batch]), y_tensor[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                losses.append(loss.item() * len(batch))
                bar.update()
            history.append(sum(losses) / len(x_tensor))
            bar.set_postfix(loss=f"{history[-1]:.3f}")
    model.train(was_training)
    return history


@torch.no_grad()
def accuracy(
    model: nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, batch_size: int = 512
) -> float:
    """Fraction of examples whose arg-max prediction equals the label (model run in eval mode, no gradients)."""
    x_tensor, y_tensor = as_tensors(x, y)
    if len(x_tensor) == 0:
        raise ValueError("accuracy of an empty set is undefined")
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(x_tensor), batch_size):
        logits = model(x_tensor[start : start + batch_size])
        correct += int((logits.argmax(dim=1) == y_tensor[start : start + batch_size]).sum())
    model.train(was_training)
    return correct / len(x_tensor)
