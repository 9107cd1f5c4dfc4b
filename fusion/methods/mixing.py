"""Fused layers that mix the bank's N*r outputs more finely than one coefficient per entry, still writing no cell.

Every layer here is a `FusedLinear` on the same programmed arrays (A_stack: N*r x d_in, B_stack: d_out x N*r, scale
s = alpha / r as the bank); only the digital step between the two analog MVMs u = A_stack x and v = B_stack u'
differs:

- `MixedLinear`, mix `rank`: u' = c * u with c in R^(N r), one scale per rank-one component (per-rank coefficients);
- `MixedLinear`, mix `core`: u' = M u with M in R^(N r x N r), a trainable digital core;
- `GatedLinear`: u' = concat_i(c_i(x) u_i), c(x) = lambda * act(G x_bar + g) computed from the layer's input by a
  small digital gate (`CoefficientGate`).

So dW = s B_stack diag(c) A_stack, s B_stack M A_stack, or s sum_i c_i(x) B_i A_i. With DoRA magnitudes (rank and
core only), y = (m / n) * (W0 x + s v) + bias with n = ||W0 + dW||_row from the same calibration read-out as
`FusedLinear`'s linear form (`FusedLinear.calibration`): W0 A_stack^T, A_stack A_stack^T and B_stack give
n^2 = ||W0||^2 + 2 s (B M) . (W0 A^T) + s^2 diag((B M) A A^T (B M)^T) for any M (M = diag(c) for per-rank). A gate's
dW changes with every input, so its norm would cost d_out (N r)^2 MACs per vector: the gate has no magnitudes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from energy import LedgerScope
from fusion.accounting import module_ledger, record_digital, vectors
from fusion.deploy import ProgrammedBank, base_layer
from fusion.fused import READOUT_PARTS, FusedLinear, layer_mvm
from fusion.lora import set_module
from fusion.params import CoefficientSharing, coefficient_groups

__all__ = [
    "GATE_ACTIVATIONS",
    "GATE_POOLS",
    "GATE_STARTS",
    "CoefficientGate",
    "GatedLinear",
    "MixedLinear",
    "MixingLayers",
    "attach_gate",
    "attach_mixing",
]

Mix = Literal["rank", "core"]
GateActivation = Literal["softmax", "sigmoid"]
GatePool = Literal["vector", "sequence"]
GateStart = Literal["zero_shot", "uniform"]
GATE_ACTIVATIONS: tuple[str, ...] = ("softmax", "sigmoid")
GATE_POOLS: tuple[str, ...] = ("vector", "sequence")
GATE_STARTS: tuple[str, ...] = ("zero_shot", "uniform")


class MixedLinear(FusedLinear):
    """A fused layer whose `coefficients` is a per-rank vector c (N r,) (y = W0 x + s B_stack (c * A_stack x)) or a
    core matrix M (N r x N r) (y = W0 x + s B_stack M A_stack x), shared by reference between the layers of a
    group; with `use_magnitude`, DoRA's m / ||W0 + dW||_row scales the rows as in `FusedLinear`."""

    def _check_coefficients(self, coefficients: object, n_entries: int, rank: int, name: str) -> None:
        width = n_entries * rank
        if not isinstance(coefficients, nn.Parameter) or coefficients.shape not in ((width,), (width, width)):
            raise ValueError(
                f"MixedLinear {name!r}: coefficients must be an nn.Parameter of shape ({width},) (per rank) or "
                f"({width}, {width}) (core), got {getattr(coefficients, 'shape', type(coefficients).__name__)}"
            )

    @property
    def mix(self) -> Mix:
        """`rank` (a vector of N r scales) or `core` (an N r x N r matrix)."""
        return "core" if self.coefficients.dim() == 2 else "rank"

    @torch.no_grad()
    def row_norm(self, c: torch.Tensor | None = None, scope: LedgerScope | None = None) -> torch.Tensor:
        """||W0 + dW||_row for the mix `c` (default the layer's own) from the calibration read-out, digitally; parts
        the storage option does not keep are read out of the arrays first. Records arithmetic and SRAM traffic."""
        if not self._has_calibration:
            raise ValueError(f"MixedLinear {self.name!r} has no calibration: row norms are unavailable")
        parts = self._norm_parts(scope)
        cal_w0_sq, cal_cross, cal_gram, cal_b_read = (parts[k] for k in READOUT_PARTS)
        mix = (self.coefficients if c is None else c).detach().to(torch.float32)
        d_out, width, s = self.out_features, self.n_entries * self.rank, self.scale
        if mix.dim() == 1:
            b_mix = cal_b_read * mix  # row o: B[o, j] c_j
            mults, adds = d_out * width, 0
        else:
            b_mix = cal_b_read @ mix  # row o: B[o, :] M
            mults, adds = d_out * width * width, d_out * width * width
        cross = (b_mix * cal_cross).sum(dim=1)  # (B M)[o] . (A W0_o^T)
        quad = ((b_mix @ cal_gram) * b_mix).sum(dim=1)  # (B M)[o] A A^T (B M)[o]^T
        squared = cal_w0_sq + 2 * s * cross + s * s * quad
        # cross: d_out W MACs; quad: d_out (W^2 + W) MACs; three terms scaled and summed, a square root per row.
        record_digital(
            scope,
            self.name,
            mults=mults + d_out * (width * width + 2 * width) + 4 * d_out,
            adds=adds + d_out * (width * width + 2 * width) + 2 * d_out,
            sram_reads=self.calibration.sram_words + mix.numel(),  # type: ignore[union-attr]
            sram_writes=d_out,
        )
        return squared.clamp_min(torch.finfo(torch.float32).tiny).sqrt()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scope = module_ledger(self)
        mix = self.coefficients
        analog_base, analog_a, analog_b = self._analog
        base_out = layer_mvm(self.base, x, analog=analog_base)
        u = layer_mvm(self.bank_a, x, analog=analog_a)
        u_mix = u * mix if mix.dim() == 1 else u @ mix.T  # c * u, or M u per vector
        out = base_out + self.scale * layer_mvm(self.bank_b, u_mix, analog=analog_b)
        if self.use_magnitude:
            out = out * (self.magnitude / self._current_norm(scope))
        bias = getattr(self.base, "bias", None)
        if bias is not None:
            out = out + bias
        if scope is not None:
            vec, d_out, size = vectors(x, self.in_features), self.out_features, mix.numel()
            scale_mults = d_out if self.use_magnitude else 0
            # Per vector: the mix (W mults, or W^2 MACs), s * v, the add to W0 x, the magnitude scale, the bias;
            # the mix values, the per-row scale and the bias read from SRAM. Once per call: m / n per row.
            record_digital(
                scope,
                self.name,
                mults=vec * (size + d_out + scale_mults) + scale_mults,
                adds=vec * ((size if mix.dim() == 2 else 0) + 2 * d_out),
                sram_reads=vec * (size + scale_mults + d_out),
            )
            if out.requires_grad:
                out.register_hook(self._backward_cost(vec))
        return out

    def _backward_cost(self, vec: int):
        def hook(grad: torch.Tensor) -> None:
            width, d_out = self.n_entries * self.rank, self.out_features
            size = self.coefficients.numel()
            # dL/dc_j += g_j u_j and dL/du_j = c_j g_j (rank: 2W mults, W adds); dL/dM += g u^T and
            # dL/du = M^T g (core: 2 W^2 MACs); g the B array's transposed output, dL/du back to the A array.
            rank_mix = self.coefficients.dim() == 1
            mix_mults, mix_adds = (2 * width, width) if rank_mix else (2 * size, 2 * size)
            per_m = 3 * d_out if self.use_magnitude else 0
            trainable = size + (d_out if self.use_magnitude else 0)
            record_digital(
                module_ledger(self),
                self.name,
                mults=vec * (mix_mults + per_m + d_out),
                adds=vec * (mix_adds + (d_out if self.use_magnitude else 0)),
                sram_reads=vec * trainable + trainable,
                sram_writes=trainable,
            )

        return hook

    def extra_repr(self) -> str:
        return (
            f"{self.in_features}, {self.out_features}, entries={self.n_entries}, rank={self.rank}, "
            f"alpha={self.alpha:g}, mix={self.mix}, magnitude={self.use_magnitude}"
        )


class CoefficientGate(nn.Module):
    """c(x) = lambda * act(G x_bar + g): N coefficients from a layer input x (d_in), G (N x d_in), g (N,) and one
    amplitude lambda, all digital. act: softmax over the N entries (LoRA-Flow) or an elementwise sigmoid. x_bar: x
    itself (`vector`: a gate per input vector / token) or the mean over the sequence axis of a (batch, seq, d_in)
    input (`sequence`: a gate per example; the layer sees no padding mask, so padded positions count). G = 0 and
    g = 0 at the start; lambda = 0 (`zero_shot`: c = 0, the layer starts as W0) or such that every c_i = 1/N
    (`uniform`: the mean of the bank's LoRAs)."""

    def __init__(self, n_entries: int, in_features: int, activation: str, pool: str, start: str) -> None:
        super().__init__()
        for key, value, allowed in (("activation", activation, GATE_ACTIVATIONS), ("pool", pool, GATE_POOLS),
                                    ("start", start, GATE_STARTS)):  # fmt: skip
            if value not in allowed:
                raise ValueError(f"CoefficientGate {key} must be one of {list(allowed)}, got {value!r}")
        self.n_entries, self.in_features = int(n_entries), int(in_features)
        self.activation, self.pool = activation, pool
        self.weight = nn.Parameter(torch.zeros(n_entries, in_features))
        self.bias = nn.Parameter(torch.zeros(n_entries))
        uniform = 1.0 if activation == "softmax" else 2.0 / n_entries  # softmax(0) = 1/N, sigmoid(0) = 1/2
        self.amplitude = nn.Parameter(torch.tensor([0.0 if start == "zero_shot" else uniform]))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The gate's input: x, or its mean over the sequence axis (kept as a length-1 axis to broadcast)."""
        return x.mean(dim=-2, keepdim=True) if self.pool == "sequence" and x.dim() >= 3 else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_pooled(self.pooled(x))

    def from_pooled(self, x_bar: torch.Tensor) -> torch.Tensor:
        """c = lambda * act(G x_bar + g) for an already pooled input."""
        logits = F.linear(x_bar, self.weight, self.bias)
        act = torch.softmax(logits, dim=-1) if self.activation == "softmax" else torch.sigmoid(logits)
        return self.amplitude * act

    @property
    def size(self) -> int:
        """Trainable values: N d_in + N + 1."""
        return self.weight.numel() + self.bias.numel() + 1

    def extra_repr(self) -> str:
        return f"entries={self.n_entries}, in={self.in_features}, activation={self.activation}, pool={self.pool}"


class GatedLinear(FusedLinear):
    """A fused layer with input-dependent coefficients: y = W0 x + s sum_i c_i(x) B_i A_i x + bias, c(x) from the
    `CoefficientGate` held as `coefficients` (one gate object shared by the layers of a group). No magnitudes,
    no calibration read-out."""

    def __init__(self, base: nn.Module, bank_a: nn.Module, bank_b: nn.Module, *, n_entries: int, rank: int,
                 alpha: float, gate: CoefficientGate, name: str = "") -> None:  # fmt: skip
        super().__init__(base, bank_a, bank_b, n_entries=n_entries, rank=rank, alpha=alpha, coefficients=gate,
                         calibration=None, form="linear", use_magnitude=False, name=name)  # fmt: skip

    def _check_coefficients(self, coefficients: object, n_entries: int, rank: int, name: str) -> None:
        if not isinstance(coefficients, CoefficientGate) or (coefficients.n_entries, coefficients.in_features) != (
            n_entries, self.in_features,
        ):  # fmt: skip
            raise ValueError(f"GatedLinear {name!r}: needs a CoefficientGate of {n_entries} entries on "
                             f"{self.in_features} inputs, got {coefficients!r}")  # fmt: skip

    @property
    def gate(self) -> CoefficientGate:
        return self.coefficients  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scope = module_ledger(self)
        n, r = self.n_entries, self.rank
        analog_base, analog_a, analog_b = self._analog
        x_bar = self.gate.pooled(x)
        c = self.gate.from_pooled(x_bar)  # (..., N), or (batch, 1, N) pooled over the sequence
        base_out = layer_mvm(self.base, x, analog=analog_base)
        u = layer_mvm(self.bank_a, x, analog=analog_a).unflatten(-1, (n, r))
        u_mix = (c.unsqueeze(-1) * u).flatten(-2)
        out = base_out + self.scale * layer_mvm(self.bank_b, u_mix, analog=analog_b)
        bias = getattr(self.base, "bias", None)
        if bias is not None:
            out = out + bias
        if scope is not None:
            vec, gates = vectors(x, self.in_features), vectors(x_bar, self.in_features)
            d_in, d_out, width = self.in_features, self.out_features, n * r
            pooled = gates != vec
            # Per gate input: G x_bar + g (N d_in MACs), the activation (an exp and a divide per entry, a sum),
            # lambda * act; the mean over the sequence (adds per vector, a divide per gate input). Per vector: the
            # combine (W mults), s * v, the add to W0 x and the bias. SRAM: G, g, lambda per gate input, bias.
            record_digital(
                scope,
                self.name,
                mults=gates * (n * d_in + 3 * n + (d_in if pooled else 0)) + vec * (width + d_out),
                adds=gates * (n * d_in + n) + vec * ((d_in if pooled else 0) + 2 * d_out),
                sram_reads=gates * self.gate.size + vec * d_out,
            )
            if out.requires_grad:
                out.register_hook(self._backward_cost(vec, gates))
        return out

    def _backward_cost(self, vec: int, gates: int = 0):  # type: ignore[override]
        def hook(grad: torch.Tensor) -> None:
            n, d_in, d_out, width = self.n_entries, self.in_features, self.out_features, self.n_entries * self.rank
            size = self.gate.size
            # Per vector: s * g, dL/dc_i = sum_k g_ik u_ik and dL/du = c_i g_i (back to the A array), N adds when
            # pooled. Per gate input: the activation's and lambda's backward (4N mults, 3N adds), dG += dz x_bar^T,
            # dg += dz, and G^T dz back to the input (2 N d_in MACs).
            record_digital(
                module_ledger(self),
                self.name,
                mults=vec * (d_out + 2 * width) + gates * (4 * n + 2 * n * d_in),
                adds=vec * (width + (n if gates != vec else 0)) + gates * (4 * n + 2 * n * d_in),
                sram_reads=gates * size + size,
                sram_writes=size,
            )

        return hook

    def extra_repr(self) -> str:
        return (
            f"{self.in_features}, {self.out_features}, entries={self.n_entries}, rank={self.rank}, "
            f"alpha={self.alpha:g}, gate={self.gate.activation}/{self.gate.pool}"
        )


@dataclass
class MixingLayers:
    """The layers swapped into a model and their mixing state by group (a Parameter, or a `CoefficientGate`)."""

    layers: dict[str, FusedLinear]
    mixers: dict[str, nn.Module | nn.Parameter]
    groups: dict[str, str]
    """Layer name -> group."""

    def magnitudes(self) -> list[nn.Parameter]:
        return [layer.magnitude for layer in self.layers.values() if layer.magnitude is not None]

    def mixer_parameters(self) -> list[nn.Parameter]:
        """Every trainable value of the mixers (coefficients, cores or gates), each object once."""
        out: list[nn.Parameter] = []
        for mixer in self.mixers.values():
            out.extend(mixer.parameters() if isinstance(mixer, nn.Module) else [mixer])
        return out


def _groups(bank: ProgrammedBank, sharing: CoefficientSharing, block_of: Callable[[str], str] | None
            ) -> tuple[dict[str, str], list[str]]:  # fmt: skip
    groups = coefficient_groups(bank.layer_names, sharing, block_of)
    return groups, list(dict.fromkeys(groups.values()))


def attach_mixing(
    model: nn.Module,
    bank: ProgrammedBank,
    *,
    mix: Mix,
    sharing: CoefficientSharing = "layer",
    block_of: Callable[[str], str] | None = None,
    init: Literal["zeros", "xavier"] = "zeros",
    use_magnitude: bool = True,
    seed: int = 0,
    scope: LedgerScope | None = None,
) -> MixingLayers:
    """Replace each bank layer of `model` (in place) by a `MixedLinear`: one (N r,) coefficient vector (mix `rank`)
    or one (N r x N r) core (mix `core`, always zero-initialised) per group of `sharing`. Per-rank `init`: zeros
    (the layer starts as W0) or `xavier` (LoRAFusion's draw, on an (N r, n_groups) matrix seeded with `seed`).
    Magnitudes start at n(mix), recorded in `scope`, so every layer starts equal to W0 + dW."""
    if mix not in ("rank", "core"):
        raise ValueError(f"mix must be 'rank' or 'core', got {mix!r}")
    if init not in ("zeros", "xavier"):
        raise ValueError(f"init must be 'zeros' or 'xavier', got {init!r}")
    if use_magnitude and any(arrays.calibration is None for arrays in bank.layers.values()):
        raise ValueError("DoRA magnitudes need the calibration read-out: program_bank(..., calibrate_norms=True)")
    groups, names = _groups(bank, sharing, block_of)
    width = bank.n_entries * bank.rank
    if mix == "core":
        mixers = {g: nn.Parameter(torch.zeros(width, width)) for g in names}
    else:
        values = torch.zeros(width, len(names))
        if init == "xavier":
            nn.init.xavier_uniform_(values, generator=torch.Generator().manual_seed(seed))
        mixers = {g: nn.Parameter(values[:, j].clone()) for j, g in enumerate(names)}
    layers: dict[str, FusedLinear] = {}
    for name, arrays in bank.layers.items():
        layer = MixedLinear(
            base_layer(model, name), arrays.a, arrays.b, n_entries=bank.n_entries, rank=bank.rank,
            alpha=bank.alpha, coefficients=mixers[groups[name]],
            calibration=arrays.calibration if use_magnitude else None, form="linear", use_magnitude=use_magnitude,
            name=name,
        )  # fmt: skip
        if use_magnitude:
            layer.reset_magnitude(scope)
        set_module(model, name, layer)
        layers[name] = layer
    return MixingLayers(layers, dict(mixers), groups)


def attach_gate(
    model: nn.Module,
    bank: ProgrammedBank,
    *,
    sharing: CoefficientSharing = "layer",
    block_of: Callable[[str], str] | None = None,
    activation: GateActivation = "softmax",
    pool: GatePool = "vector",
    start: GateStart = "zero_shot",
) -> MixingLayers:
    """Replace each bank layer of `model` (in place) by a `GatedLinear`, one `CoefficientGate` per group of
    `sharing` (the layers of a group must take inputs of one width: q and v of a block do)."""
    groups, names = _groups(bank, sharing, block_of)
    widths: dict[str, dict[str, int]] = {g: {} for g in names}
    bases = {name: base_layer(model, name) for name in bank.layer_names}
    for name, group in groups.items():
        widths[group][name] = int(bases[name].in_features)
    for group, by_layer in widths.items():
        if len(set(by_layer.values())) > 1:
            raise ValueError(f"fusion_gate: group {group!r} shares one gate between layers of different input "
                             f"widths {by_layer}; use share: layer")  # fmt: skip
    gates = {g: CoefficientGate(bank.n_entries, next(iter(widths[g].values())), activation, pool, start)
             for g in names}  # fmt: skip
    layers: dict[str, FusedLinear] = {}
    for name, arrays in bank.layers.items():
        layer = GatedLinear(bases[name], arrays.a, arrays.b, n_entries=bank.n_entries, rank=bank.rank,
                            alpha=bank.alpha, gate=gates[groups[name]], name=name)  # fmt: skip
        set_module(model, name, layer)
        layers[name] = layer
    return MixingLayers(layers, dict(gates), groups)
