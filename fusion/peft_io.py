"""PEFT LoRA adapters into LoRA banks.

Import: a PEFT adapter directory (`adapter_config.json` + `adapter_model.safetensors`, keys such as
`base_model.model.encoder.block.0.layer.0.SelfAttention.q.lora_A.weight`) becomes one bank entry: its module names
are mapped onto the layer names of the model it will run on (digital, converted to analog, or with fused layers
attached), its shapes checked against those layers. `bank_from_peft` puts several adapters with the same rank,
alpha and layers into a `LoRABank`. Reading needs neither peft nor transformers (JSON and safetensors only).

Export (a fused result written back as a PEFT adapter) is `fusion.peft_export`.

What a bank entry cannot hold is refused with a one-line ValueError: other PEFT methods, DoRA and the other LoRA
variants, per-layer ranks or alphas, trained biases, base-modifying initialisations (PiSSA, OLoRA, CorDA, LoftQ,
LoRA-GA), full weights of `modules_to_save` (unless explicitly ignored).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from torch import nn

from fusion.bank import LoRABank
from fusion.lora import is_linear

__all__ = [
    "ADAPTER_CONFIG_FILE",
    "ADAPTER_WEIGHTS_FILE",
    "PeftLoRA",
    "bank_from_peft",
    "load_peft_adapter",
]

ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
KEY_PREFIX = "base_model.model."
"""PEFT's prefix of every saved key: the PeftModel's `base_model` (LoraModel) and its `model` (the wrapped model)."""

_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<part>[AB])\.weight$")

# Config fields that switch on a LoRA variant or a feature whose state or forward a plain bank entry cannot hold.
_UNSUPPORTED_OPTIONS: dict[str, str] = {
    "use_dora": "DoRA adapters carry a magnitude vector a LoRA bank entry cannot hold (fusion trains its own)",
    "use_qalora": "QA-LoRA pools the input before lora_A",
    "use_bdlora": "BD-LoRA uses block-diagonal factors",
    "alora_invocation_tokens": "activated LoRA (aLoRA) only acts after invocation tokens",
    "velora_config": "VeLoRA changes the LoRA forward",
    "monteclora_config": "MonteCLoRA samples its factors",
    "kasa_config": "KaSA changes the LoRA forward",
    "arrow_config": "Arrow routes between adapters",
    "lora_bias": "lora_bias adds a bias vector to lora_B",
    "layer_replication": "layer_replication duplicates model layers",
    "target_parameters": "LoRA on nn.Parameters (target_parameters) is not a linear-layer LoRA",
    "trainable_token_indices": "trainable token embeddings are not LoRA factors",
    "rank_pattern": "per-layer ranks (rank_pattern): a bank has one rank",
    "alpha_pattern": "per-layer alphas (alpha_pattern): a bank has one alpha",
}
# init_lora_weights values that rewrite the base weights (W0 - s B0 A0) or switch on a variant: the saved factors
# are not a LoRA on the original base.
_BASE_MODIFYING_INITS = ("pissa", "corda", "olora", "loftq", "lora_ga", "mica")


@dataclass
class PeftLoRA:
    """One imported PEFT LoRA adapter, on the model's layer names."""

    layers: dict[str, tuple[torch.Tensor, torch.Tensor]]
    """Model layer name -> (A (rank x d_in), B (d_out x rank)), float32: what a bank entry stores."""
    rank: int
    alpha: float
    """Effective alpha: dW = (alpha / rank) B A. For rsLoRA adapters (scale alpha / sqrt(r)) this is
    alpha_config * sqrt(rank), so that alpha / rank is the adapter's own scale."""
    directory: Path
    config: dict[str, object] = field(repr=False)
    """adapter_config.json as read."""
    adapter_names: dict[str, str] = field(default_factory=dict, repr=False)
    """Model layer name -> the module name the adapter used (after the `base_model.model.` prefix)."""
    ignored: list[str] = field(default_factory=list)
    """Keys skipped with `ignore_modules_to_save=True` (full weights of modules_to_save, trained biases)."""

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @property
    def target_modules(self) -> list[str]:
        """Last name components of the adapted layers (e.g. ["q", "v"]), sorted."""
        return sorted({name.rsplit(".", 1)[-1] for name in self.layers})


def _fail(path: Path, problem: str) -> ValueError:
    return ValueError(f"{path}: {problem}")


def _read_config(directory: Path) -> tuple[dict[str, object], Path]:
    if not directory.is_dir():
        raise ValueError(f"PEFT adapter directory {directory} does not exist or is not a directory")
    path = directory / ADAPTER_CONFIG_FILE
    if not path.is_file():
        raise _fail(directory, f"no {ADAPTER_CONFIG_FILE}: not a PEFT adapter directory")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise _fail(path, f"not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise _fail(path, "expected a JSON object")
    return config, path


def _check_config(config: dict[str, object], path: Path) -> tuple[int, float]:
    """Rank and effective alpha of a plain LoRA config; ValueError naming the first unsupported option."""
    peft_type = config.get("peft_type")
    if peft_type != "LORA":
        raise _fail(path, f"peft_type {peft_type!r} is not supported: only LoRA adapters (peft_type 'LORA') fit a bank")
    for option, reason in _UNSUPPORTED_OPTIONS.items():
        if config.get(option):
            raise _fail(path, f"{option}={config[option]!r} is not supported: {reason}")
    bias = config.get("bias", "none")
    if bias != "none":
        raise _fail(path, f"bias={bias!r} is not supported: the adapter trains bias vectors a bank cannot hold")
    init = config.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower().startswith(_BASE_MODIFYING_INITS):
        raise _fail(
            path,
            f"init_lora_weights={init!r} is not supported: it changes the base weights (or the forward); convert it "
            "to a plain LoRA first (peft save_pretrained(..., path_initial_model_for_weight_conversion=...))",
        )
    rank = config.get("r")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise _fail(path, f"r must be a positive integer, got {rank!r}")
    alpha = config.get("lora_alpha")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise _fail(path, f"lora_alpha must be a number > 0, got {alpha!r}")
    alpha = float(alpha)
    if config.get("use_rslora"):
        # rsLoRA scales by alpha / sqrt(r); the bank scales by alpha / r: the same dW with alpha * sqrt(r).
        alpha *= math.sqrt(rank)
    return rank, alpha


def _unwrap(module: nn.Module) -> nn.Module:
    while not is_linear(module) and not _is_conv1d(module) and hasattr(module, "base"):
        module = module.base
    return module


def _is_conv1d(module: nn.Module) -> bool:
    from crossbar.hf import is_conv1d  # crossbar sits below fusion; imported here so digital use needs no arrays

    return is_conv1d(module)


def _layer_dims(module: nn.Module) -> tuple[int, int] | None:
    """(d_in, d_out) of a linear layer (nn.Linear, GPT-2 Conv1D with weight (in, out), an analog layer, or a
    LoRA/fused wrapper around one); None for anything else."""
    module = _unwrap(module)
    if _is_conv1d(module):
        return int(module.weight.shape[0]), int(module.weight.shape[1])
    if is_linear(module):
        return int(module.in_features), int(module.out_features)
    return None


def _linear_index(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Model layer name -> (d_in, d_out) of every linear layer, wrappers counted under their own name only."""
    index: dict[str, tuple[int, int]] = {}
    inside: list[str] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(prefix) for prefix in inside):
            continue
        dims = _layer_dims(module)
        if dims is not None:
            index[name] = dims
            inside.append(name + ".")
    return index


def _resolve(adapter_name: str, index: dict[str, tuple[int, int]], path: Path) -> str:
    """The model layer an adapter module name refers to: the same name, or the one layer whose name differs from it
    only by a leading prefix (an adapter saved on `BertForSequenceClassification` used on `BertModel`, or the
    reverse)."""
    if adapter_name in index:
        return adapter_name
    matches = [n for n in index if n.endswith("." + adapter_name) or adapter_name.endswith("." + n)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        sample = list(index)[:6]
        raise _fail(
            path,
            f"adapter module {adapter_name!r} is not a linear layer of the model (model layers: {sample}"
            f"{' ...' if len(index) > 6 else ''})",
        )
    raise _fail(path, f"adapter module {adapter_name!r} matches several model layers: {matches[:4]}")


def load_peft_adapter(
    directory: str | os.PathLike[str], model: nn.Module, *, ignore_modules_to_save: bool = False
) -> PeftLoRA:
    """Read a PEFT LoRA adapter directory and map it onto `model`'s layers (checked: names and shapes).

    `model` is the model the bank will run on: the Hugging Face model, its analog conversion, or either with
    fused/LoRA layers attached (their names are the base layers' names). A layer's factors are peft's
    lora_A (r x d_in) and lora_B (d_out x r) as saved: peft's `fan_in_fan_out` (GPT-2 `Conv1D`, weight stored
    (in, out)) only transposes the merged delta, never the factors. With `ignore_modules_to_save`, full weights of
    `modules_to_save` (e.g. a sequence-classification head) are skipped and listed in `ignored`; otherwise they are
    an error, since the fused model would not have them."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    directory = Path(directory)
    config, config_path = _read_config(directory)
    rank, alpha = _check_config(config, config_path)
    weights_path = directory / ADAPTER_WEIGHTS_FILE
    if not weights_path.is_file():
        extra = " (adapter_model.bin pickles are not read: re-save it with safetensors)" if (
            directory / "adapter_model.bin"
        ).is_file() else ""  # fmt: skip
        raise _fail(directory, f"no {ADAPTER_WEIGHTS_FILE}{extra}")
    try:
        tensors = load_tensors(weights_path.read_bytes())
    except (SafetensorError, ValueError, RuntimeError) as error:
        raise _fail(weights_path, f"not a readable safetensors file ({error})") from None
    if not tensors:
        raise _fail(weights_path, "holds no tensors")

    factors: dict[str, dict[str, torch.Tensor]] = {}
    ignored: list[str] = []
    for key in sorted(tensors):
        if not key.startswith(KEY_PREFIX):
            raise _fail(weights_path, f"key {key!r} does not start with {KEY_PREFIX!r}: not a PEFT LoRA state dict")
        rest = key[len(KEY_PREFIX) :]
        match = _LORA_KEY.match(rest)
        if match:
            factors.setdefault(match["module"], {})[match["part"]] = tensors[key]
        elif "lora_embedding_" in rest:
            raise _fail(weights_path, f"key {key!r}: LoRA on an embedding layer is not supported (linear layers only)")
        elif "lora_magnitude_vector" in rest:
            raise _fail(weights_path, f"key {key!r}: a DoRA magnitude is not supported in a bank entry")
        elif ".lora_" in rest:
            raise _fail(weights_path, f"key {key!r} is not a LoRA factor of a linear layer (lora_A/lora_B.weight)")
        elif ignore_modules_to_save:
            ignored.append(key)
        else:
            raise _fail(
                weights_path,
                f"key {key!r} is a full weight (modules_to_save or a trained bias) a bank cannot hold; pass "
                "ignore_modules_to_save=True to import only the LoRA factors",
            )
    if not factors:
        raise _fail(weights_path, "holds no lora_A/lora_B weights")

    index = _linear_index(model)
    layers: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    names: dict[str, str] = {}
    for adapter_name, parts in factors.items():
        missing = [p for p in "AB" if p not in parts]
        if missing:
            raise _fail(weights_path, f"adapter module {adapter_name!r} has no lora_{missing[0]}.weight")
        target = _resolve(adapter_name, index, weights_path)
        if target in layers:
            raise _fail(weights_path, f"adapter modules {names[target]!r} and {adapter_name!r} both map to {target!r}")
        a, b = parts["A"], parts["B"]
        d_in, d_out = index[target]
        if not (a.is_floating_point() and b.is_floating_point()):
            raise _fail(weights_path, f"adapter module {adapter_name!r}: factors must be floating point")
        if tuple(a.shape) != (rank, d_in) or tuple(b.shape) != (d_out, rank):
            raise _fail(
                weights_path,
                f"adapter module {adapter_name!r} has lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)}; the "
                f"model's {target!r} ({d_out}x{d_in}) at r={rank} needs lora_A ({rank}, {d_in}) and lora_B "
                f"({d_out}, {rank})",
            )
        a, b = (t.detach().to(torch.float32).contiguous() for t in (a, b))
        if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
            raise _fail(weights_path, f"adapter module {adapter_name!r}: factors must be finite")
        layers[target] = (a, b)
        names[target] = adapter_name
    order = {name: i for i, name in enumerate(index)}
    layers = dict(sorted(layers.items(), key=lambda item: order[item[0]]))
    return PeftLoRA(layers, rank, alpha, directory, config, names, ignored)


def bank_from_peft(
    adapters: Mapping[str, str | os.PathLike[str]] | Sequence[str | os.PathLike[str]],
    model: nn.Module,
    *,
    ignore_modules_to_save: bool = False,
) -> LoRABank:
    """A `LoRABank` of PEFT LoRA adapters, one entry each, on `model`'s layer names (see `load_peft_adapter`).

    `adapters` maps entry (source task) names to adapter directories, or lists directories (entries named after the
    directories). The adapters must share rank, alpha (effective, see `PeftLoRA.alpha`) and adapted layers."""
    if isinstance(adapters, (str, os.PathLike)):
        raise ValueError("adapters must be a mapping of names to directories or a list of directories, not one path")
    if isinstance(adapters, Mapping):
        named = [(str(name), Path(path)) for name, path in adapters.items()]
    else:
        named = [(Path(path).name, Path(path)) for path in adapters]
        counts: dict[str, int] = {}
        for name, _ in named:
            counts[name] = counts.get(name, 0) + 1
        repeated = sorted(n for n, c in counts.items() if c > 1)
        if repeated:
            raise ValueError(f"adapter directories share the names {repeated}: pass a dict of entry name -> directory")
    if not named:
        raise ValueError("bank_from_peft needs at least one adapter directory")
    first_name, first = named[0][0], None
    bank: LoRABank | None = None
    for name, path in named:
        lora = load_peft_adapter(path, model, ignore_modules_to_save=ignore_modules_to_save)
        if first is None:
            first = lora
            bank = LoRABank(lora.rank, lora.alpha, lora.target_modules)
        else:
            where = f"adapter {name!r} ({path}) does not match adapter {first_name!r} ({first.directory})"
            if lora.rank != first.rank:
                raise ValueError(f"{where}: rank {lora.rank} vs {first.rank}")
            if not math.isclose(lora.alpha, first.alpha, rel_tol=1e-9):
                raise ValueError(f"{where}: alpha {lora.alpha:g} vs {first.alpha:g} (effective, rsLoRA folded in)")
            if set(lora.layers) != set(first.layers):
                missing = sorted(set(first.layers) - set(lora.layers))
                extra = sorted(set(lora.layers) - set(first.layers))
                raise ValueError(f"{where}: adapted layers differ: missing {missing[:3]}, unexpected {extra[:3]}")
        try:
            bank.add(name, lora.layers)  # type: ignore[union-attr]
        except ValueError as error:
            raise ValueError(f"adapter {name!r} ({path}): {error}") from None
    return bank  # type: ignore[return-value]
