"""PEFT LoRA adapters in and out of LoRA banks.

Import: a PEFT adapter directory (`adapter_config.json` + `adapter_model.safetensors`, keys such as
`base_model.model.encoder.block.0.layer.0.SelfAttention.q.lora_A.weight`) becomes one bank entry: its module names
are mapped onto the layer names of the model it will run on (digital, converted to analog, or with fused layers
attached), its shapes checked against those layers. `bank_from_peft` puts several adapters with the same rank,
alpha and layers into a `LoRABank`. Reading needs neither peft nor transformers (JSON and safetensors only).

Export: a fused result written back as a PEFT LoRA adapter, where that is exact. For the lorahub form
dW = s (sum_i c_i B_i)(sum_i c_i A_i) is a rank-r LoRA with A = sum_i c_i A_i, B = sum_i c_i B_i and the bank's
alpha. For the linear form dW = s sum_i c_i B_i A_i is a LoRA of rank N*r (A = A_stack, B = B_stack diag(c), alpha
scaled by N so that alpha / rank stays s): exact, only larger. A trained DoRA magnitude is exported as peft's
DoRA (`use_dora`, `lora_magnitude_vector` = m): peft computes W' = m * (W0 + dW) / ||W0 + dW||_row with the norm
detached, the fused layer's formula. The norm is that of the base weights the adapter is loaded onto; the fused
layer's comes from the programmed cells, so the two agree exactly on the `ideal` preset.

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
from safetensors.torch import save as save_tensors
from torch import nn

from fusion.bank import LoRABank
from fusion.deploy import FusionLayers
from fusion.fused import FusedLinear
from fusion.lora import is_linear
from simutil import atomic_write_bytes, atomic_write_text

__all__ = [
    "ADAPTER_CONFIG_FILE",
    "ADAPTER_WEIGHTS_FILE",
    "PeftLoRA",
    "bank_from_peft",
    "export_fused_peft",
    "load_peft_adapter",
    "save_peft_adapter",
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


# --- export ---------------------------------------------------------------------------------------------------------


def save_peft_adapter(
    layers: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    rank: int,
    alpha: float,
    directory: str | os.PathLike[str],
    *,
    magnitudes: Mapping[str, torch.Tensor] | None = None,
    fan_in_fan_out: bool = False,
    base_model_name_or_path: str | None = None,
    task_type: str | None = None,
) -> Path:
    """Write a PEFT LoRA adapter directory: layer name -> (A (rank x d_in), B (d_out x rank)), dW = (alpha/rank) B A.

    With `magnitudes` (layer name -> (d_out,) m for every layer) the adapter is a peft DoRA adapter (`use_dora`).
    `target_modules` lists the full layer names, so peft adapts exactly these layers. Set `fan_in_fan_out` for
    GPT-2-style `Conv1D` models (peft otherwise corrects it with a warning)."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be a positive integer, got {rank!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    if not layers:
        raise ValueError("save_peft_adapter needs at least one layer")
    if magnitudes is not None and set(magnitudes) != set(layers):
        raise ValueError("magnitudes must have one (d_out,) vector for every layer, or be None")
    tensors: dict[str, torch.Tensor] = {}
    for name, pair in layers.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"layer names must be non-empty strings, got {name!r}")
        a, b = (torch.as_tensor(t).detach().to(torch.float32).contiguous() for t in pair)
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != rank or b.shape[1] != rank:
            raise ValueError(
                f"layer {name!r}: A must be ({rank}, d_in) and B (d_out, {rank}), "
                f"got {tuple(a.shape)} and {tuple(b.shape)}"
            )
        tensors[f"{KEY_PREFIX}{name}.lora_A.weight"] = a
        tensors[f"{KEY_PREFIX}{name}.lora_B.weight"] = b
        if magnitudes is not None:
            m = torch.as_tensor(magnitudes[name]).detach().to(torch.float32).contiguous()
            if tuple(m.shape) != (b.shape[0],):
                raise ValueError(f"layer {name!r}: magnitude must have shape ({b.shape[0]},), got {tuple(m.shape)}")
            tensors[f"{KEY_PREFIX}{name}.lora_magnitude_vector"] = m
    alpha_out: float | int = int(alpha) if float(alpha).is_integer() else float(alpha)
    config = {
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": base_model_name_or_path,
        "revision": None,
        "inference_mode": True,
        "r": rank,
        "lora_alpha": alpha_out,
        "target_modules": sorted(layers),
        "lora_dropout": 0.0,
        "fan_in_fan_out": bool(fan_in_fan_out),
        "bias": "none",
        "use_rslora": False,
        "use_dora": magnitudes is not None,
        "lora_bias": False,
        "modules_to_save": None,
        "init_lora_weights": True,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    directory = Path(directory)
    atomic_write_bytes(directory / ADAPTER_WEIGHTS_FILE, save_tensors(tensors))
    atomic_write_text(directory / ADAPTER_CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    return directory


def _fused_source(
    source: object, form: str | None
) -> tuple[dict[str, torch.Tensor], dict[str, FusedLinear | None], str]:
    """Per-layer coefficients, the fused layers (None for a plain coefficient mapping) and the form."""
    if isinstance(source, FusionLayers):
        fused = dict(source.layers)
    elif isinstance(source, nn.Module):
        fused = {name: m for name, m in source.named_modules() if isinstance(m, FusedLinear)}
        if not fused:
            raise ValueError("source model has no FusedLinear layers: attach_fusion(...) first")
    elif isinstance(source, Mapping):
        if not source:
            raise ValueError("source coefficients are empty")
        coefficients = {}
        for name, c in source.items():
            c = torch.as_tensor(c).detach().to(torch.float32)
            if c.dim() != 1:
                raise ValueError(f"coefficients of layer {name!r} must be a vector (N,), got shape {tuple(c.shape)}")
            coefficients[str(name)] = c
        return coefficients, dict.fromkeys(coefficients), form or "lorahub"
    else:
        raise ValueError(
            "source must be a model with FusedLinear layers, attach_fusion's FusionLayers, or a mapping of layer "
            f"name -> coefficients, got {type(source).__name__}"
        )
    finer = sorted(name for name, layer in fused.items() if type(layer) is not FusedLinear)
    if finer:  # per-rank, core and gated mixes (fusion.methods.mixing) are not one coefficient per entry
        raise ValueError(f"fused layer {finer[0]!r} is a {type(fused[finer[0]]).__name__}: only fusion's and "
                         "lorahub's layers (one coefficient per bank entry) export to a PEFT adapter")  # fmt: skip
    forms = {layer.form for layer in fused.values()}
    if len(forms) != 1:
        raise ValueError(f"fused layers mix forms {sorted(forms)}: export them separately")
    layer_form = forms.pop()
    if form is not None and form != layer_form:
        raise ValueError(f"form={form!r} but the fused layers use the {layer_form!r} form")
    coefficients = {name: layer.coefficients.detach().to(torch.float32).clone() for name, layer in fused.items()}
    return coefficients, fused, layer_form


def export_fused_peft(
    source: nn.Module | FusionLayers | Mapping[str, torch.Tensor],
    bank: LoRABank | object,
    directory: str | os.PathLike[str],
    *,
    form: str | None = None,
    dora: bool | None = None,
    fan_in_fan_out: bool = False,
    base_model_name_or_path: str | None = None,
    task_type: str | None = None,
) -> Path:
    """Write the fused adapters of `source` as one PEFT adapter directory (see the module docstring for when this
    is exact). Returns the directory.

    `source`: a model with `FusedLinear` layers (e.g. `fusion.adapt(...).model`), the `FusionLayers` of
    `attach_fusion`, or a mapping layer name -> coefficient vector (N,) (then `form` says which, default lorahub,
    and there are no magnitudes). `bank`: the `LoRABank` (or `ProgrammedBank`) the fusion ran on; its digital
    factors are exported. `dora`: None exports a DoRA adapter exactly when the fused layers have magnitudes;
    False exports a plain LoRA, allowed only when every magnitude still equals its init ||W0 + dW(c)||_row (then
    the layer is W0 + dW, which a plain LoRA holds); True requires magnitudes."""
    bank = getattr(bank, "bank", bank)
    if not isinstance(bank, LoRABank):
        raise ValueError(f"bank must be a LoRABank or ProgrammedBank, got {type(bank).__name__}")
    if form is not None and form not in ("lorahub", "linear"):
        raise ValueError(f"form must be 'lorahub' or 'linear', got {form!r}")
    coefficients, fused, form = _fused_source(source, form)
    n, r = bank.n_entries, bank.rank
    unknown = sorted(set(coefficients) - set(bank.layer_names))
    if unknown:
        raise ValueError(f"fused layers {unknown[:3]} are not in the bank (bank layers: {bank.layer_names[:3]}...)")
    has_magnitude = {name: layer is not None and layer.magnitude is not None for name, layer in fused.items()}
    if dora is None:
        dora = any(has_magnitude.values())
    if dora and not all(has_magnitude.values()):
        lacking = sorted(name for name, has in has_magnitude.items() if not has)
        raise ValueError(f"dora=True needs a DoRA magnitude on every fused layer; {lacking[:3]} have none")

    layers: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    magnitudes: dict[str, torch.Tensor] = {}
    for name, c in coefficients.items():
        if c.shape != (n,):
            raise ValueError(f"coefficients of layer {name!r} have shape {tuple(c.shape)}, the bank has {n} entries")
        a_stack, b_stack = bank.stacked(name)
        if form == "lorahub":
            a = torch.einsum("n,nrk->rk", c, a_stack.view(n, r, -1))  # sum_i c_i A_i
            b = torch.einsum("n,onr->or", c, b_stack.view(-1, n, r))  # sum_i c_i B_i
        else:
            a, b = a_stack, b_stack * c.repeat_interleave(r)[None, :]  # [c_1 B_1 ... c_N B_N] [A_1; ...; A_N]
        layers[name] = (a, b)
        layer = fused[name]
        if layer is None or layer.magnitude is None:
            continue
        magnitude = layer.magnitude.detach().to(torch.float32)
        if dora:
            magnitudes[name] = magnitude.clone()
        else:
            init = layer.row_norm(layer.coefficients.detach())
            error = float(((magnitude - init).abs() / init.abs().clamp_min(1e-30)).max())
            if error > 1e-5:
                raise ValueError(
                    f"fused layer {name!r}: its DoRA magnitude was trained (differs from ||W0 + dW||_row by up to "
                    f"{error:.2g} relative), which a plain LoRA cannot hold; export with dora=True (peft use_dora)"
                )
    rank_out, alpha_out = (r, bank.alpha) if form == "lorahub" else (n * r, bank.alpha * n)
    return save_peft_adapter(
        layers,
        rank_out,
        alpha_out,
        directory,
        magnitudes=magnitudes if dora else None,
        fan_in_fan_out=fan_in_fan_out,
        base_model_name_or_path=base_model_name_or_path,
        task_type=task_type,
    )
