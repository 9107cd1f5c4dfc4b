"""PEFT LoRA adapters out of fusion: a bank entry's factors, or a fused result, saved as a PEFT adapter directory.

A fused result written back as a PEFT LoRA adapter, where that is exact. For the lorahub form
dW = s (sum_i c_i B_i)(sum_i c_i A_i) is a rank-r LoRA with A = sum_i c_i A_i, B = sum_i c_i B_i and the bank's
alpha. For the linear form dW = s sum_i c_i B_i A_i is a LoRA of rank N*r (A = A_stack, B = B_stack diag(c), alpha
scaled by N so that alpha / rank stays s): exact, only larger. A trained DoRA magnitude is exported as peft's
DoRA (`use_dora`, `lora_magnitude_vector` = m): peft computes W' = m * (W0 + dW) / ||W0 + dW||_row with the norm
detached, the fused layer's formula. The norm is that of the base weights the adapter is loaded onto; the fused
layer's comes from the programmed cells, so the two agree exactly on the `ideal` preset.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save as save_tensors
from torch import nn

from fusion.bank import LoRABank
from fusion.deploy import FusionLayers
from fusion.fused import FusedLinear
from fusion.peft_io import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, KEY_PREFIX
from simutil import atomic_write_bytes, atomic_write_text

__all__ = ["export_fused_peft", "save_peft_adapter"]


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
