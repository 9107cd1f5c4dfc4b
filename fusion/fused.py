"""`FusedLinear`: a frozen analog base, an analog LoRA bank and digital fusion coefficients and magnitude.

For one layer with base W0 (an analog array) and a bank of N rank-r LoRAs stored as two analog arrays, A_stack
(N*r x d_in) and B_stack (d_out x N*r), the forward never rewrites a cell:

    u  = A_stack x                                  analog MVM (N*r outputs)
    u' = concat_i(c_i * sum_j c_j u_j)              lorahub form: (sum_i c_i B_i)(sum_j c_j A_j) x = B_stack u'
       = concat_i(c_i * u_i)                        linear form:  sum_i c_i B_i A_i x               = B_stack u'
    v  = B_stack u'                                 analog MVM
    y  = (m / n) * (W0 x + s v) + bias              digital scale, n = ||W0 + dW||_row detached (DoRA)

The row norms n depend on c; they follow digitally from quantities read out of the programmed arrays
(`FusedCalibration`: W0 A_stack^T, A_stack A_stack^T, B_stack and ||W0 row||^2), so a new c costs digital
arithmetic, SRAM reads and possibly array reads, never a write. Gradients reach c and m through the analog arrays'
transposed MVMs (straight-through quantizers) and digital arithmetic.

The read-out (`calibrate`, `read_parts`): noise-free (reads 0, an idealisation priced as one read-out), or the mean
of K noisy analog MVM read-outs through the arrays' read noise, DAC and ADC (each priced). What is kept in SRAM
(`storage`) trades digital state against array reads:
- `readout`: all four parts, d_out + 2 d_out N r + (N r)^2 words per layer; a new c costs digital work only.
- `no_b_copy`: no copy of B_stack (d_out N r words fewer); B_stack is read again (K x N r unit-vector MVMs) each
  time c changes.
- `on_demand`: only ||W0 row||^2 (d_out words); W0 A^T, A A^T and B_stack are read again (K x 4 N r MVMs) each time
  c changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from crossbar import AnalogLayer
from energy import LedgerScope
from fusion.accounting import module_ledger, record_digital, vectors
from fusion.reference import FusionForm, check_form

__all__ = ["NORM_STORAGES", "FusedCalibration", "FusedLinear", "calibrate", "layer_mvm", "read_parts", "read_weight"]


def read_weight(layer: nn.Module) -> torch.Tensor:
    """What a layer's weights are: the programmed cells (noise-free read-out) of an analog layer, or the weight of
    a digital `nn.Linear`."""
    if isinstance(layer, AnalogLayer):
        return layer.programmed_weight().detach().to(torch.float32)
    return layer.weight.detach().to(torch.float32)


def layer_mvm(layer: nn.Module, x: torch.Tensor, *, analog: bool | None = None) -> torch.Tensor:
    """W x without bias: an analog layer's `mvm`, or a digital layer's matmul. `analog`: whether `layer` is an
    `AnalogLayer`, when the caller knows (the protocol check costs tens of microseconds per call)."""
    if analog is None:
        analog = isinstance(layer, AnalogLayer)
    if analog:
        return layer.mvm(x)
    return F.linear(x, layer.weight)


def _is_analog(layer: nn.Module) -> bool:
    return isinstance(layer, AnalogLayer)


NormStorage = Literal["readout", "no_b_copy", "on_demand"]
NORM_STORAGES: tuple[str, ...] = ("readout", "no_b_copy", "on_demand")
READOUT_PARTS = ("w0_sq", "cross", "gram", "b_read")
_STORED: dict[str, tuple[str, ...]] = {
    "readout": READOUT_PARTS,
    "no_b_copy": ("w0_sq", "cross", "gram"),
    "on_demand": ("w0_sq",),
}
"""What each storage option keeps in SRAM; the other parts are read out of the arrays again whenever the
coefficients change (`FusedLinear.row_norm`)."""


@dataclass
class FusedCalibration:
    """Read-out of a layer and its bank arrays from which the row norms for any c follow digitally. Parts that the
    storage option does not keep are None (read again on demand)."""

    w0_sq: torch.Tensor | None
    """(d_out,) ||W0 row||^2."""
    cross: torch.Tensor | None
    """(d_out, N*r) W0 A_stack^T: row o, column (i, k) is W0_o . A_i[k]."""
    gram: torch.Tensor | None
    """(N*r, N*r) A_stack A_stack^T."""
    b_read: torch.Tensor | None
    """(d_out, N*r) B_stack as read out."""
    reads: int = 0
    """Noisy analog read-outs averaged per quantity (0 = noise-free read-out)."""
    storage: str = "readout"
    """`readout`, `no_b_copy` or `on_demand` (`NORM_STORAGES`)."""

    @property
    def sram_words(self) -> int:
        """Datapath words held in SRAM next to the layer (the stored parts only)."""
        return sum(t.numel() for t in self.parts().values())

    def parts(self) -> dict[str, torch.Tensor]:
        """The stored parts by name."""
        return {k: getattr(self, k) for k in READOUT_PARTS if getattr(self, k) is not None}


def _check_readout(reads: int, storage: str) -> None:
    if isinstance(reads, bool) or not isinstance(reads, int) or not 0 <= reads <= 1024:
        raise ValueError(f"reads must be an int in [0, 1024], got {reads!r}")
    if storage not in NORM_STORAGES:
        raise ValueError(f"storage must be one of {list(NORM_STORAGES)}, got {storage!r}")


def _mean_reads(
    layer: nn.Module, x: torch.Tensor, reads: int, scope: LedgerScope | None, *, transposed: bool = False,
    probe: bool = False,
) -> torch.Tensor:
    """The mean of `reads` noisy analog MVMs of `layer` on x (transposed: d @ W), each recorded in `scope`: through
    the array's read noise, DAC and ADC (`AnalogLinear.read_out`; one-hot probe inputs convert over a full scale of
    one weight, the exact bound of their partial sums). A digital layer computes exactly."""
    if not _is_analog(layer):
        weight = layer.weight.detach().to(torch.float32)
        return x @ weight if transposed else x @ weight.T
    total = None
    for _ in range(reads):
        y = layer.read_out(x, scope, transposed=transposed, full_scale=1.0 if probe else None)
        total = y if total is None else total + y
    return total / reads


def read_parts(
    base: nn.Module,
    bank_a: nn.Module,
    bank_b: nn.Module,
    parts: tuple[str, ...],
    reads: int,
    scope: LedgerScope | None,
    *,
    layer: str = "",
) -> dict[str, torch.Tensor]:
    """Read calibration parts out of the programmed arrays. reads 0: the noise-free read-out (`programmed_weight`),
    recorded by count as the MVMs a device would run (running them would draw read-noise keys): A_stack's rows by
    N*r transposed unit-vector MVMs, W0 A_stack^T by N*r MVMs on W0 with those rows, A_stack A_stack^T by N*r MVMs
    on A_stack, B_stack by N*r unit-vector MVMs, ||W0 row||^2 by d_in unit-vector MVMs on W0, squared and summed per
    row digitally. reads K >= 1: the same MVMs run through the arrays' read noise and ADCs, each K times and
    averaged (the A rows are averaged first, then used as inputs), every run recorded."""
    d_out, d_in = int(base.out_features), int(base.in_features)
    n_rows = int(bank_a.out_features)
    needs_a = any(p in parts for p in ("cross", "gram"))
    out: dict[str, torch.Tensor] = {}
    unit_rows, unit_in = torch.eye(n_rows), torch.eye(d_in)
    if reads == 0:
        w0, a, b = read_weight(base), read_weight(bank_a), read_weight(bank_b)
        if a.shape[1] != d_in or b.shape != (d_out, n_rows):
            raise ValueError(
                f"calibrate {layer!r}: base {tuple(w0.shape)}, A_stack {tuple(a.shape)} and B_stack "
                f"{tuple(b.shape)} do not fit together"
            )
        values = {"w0_sq": lambda: (w0 * w0).sum(dim=1), "cross": lambda: w0 @ a.T, "gram": lambda: a @ a.T,
                  "b_read": lambda: b}  # fmt: skip
        out = {p: values[p]() for p in parts}
        if scope is not None:
            # The probe inputs are known (unit vectors, rows of A), so the cells they make conduct are priced.
            if needs_a and _is_analog(bank_a):
                bank_a.record_reads(n_rows, scope, transposed=True, inputs=unit_rows)
            if "gram" in parts and _is_analog(bank_a):
                bank_a.record_reads(n_rows, scope, inputs=a)
            if "cross" in parts and _is_analog(base):
                base.record_reads(n_rows, scope, inputs=a)
            if "w0_sq" in parts and _is_analog(base):
                base.record_reads(d_in, scope, inputs=unit_in)
            if "b_read" in parts and _is_analog(bank_b):
                bank_b.record_reads(n_rows, scope, inputs=unit_rows)
    else:
        a = _mean_reads(bank_a, unit_rows, reads, scope, transposed=True, probe=True) if needs_a else None
        if "w0_sq" in parts:
            w0_t = _mean_reads(base, unit_in, reads, scope, probe=True)  # (d_in, d_out): column j of W0 per row
            out["w0_sq"] = (w0_t * w0_t).sum(dim=0)
        if "cross" in parts:
            out["cross"] = _mean_reads(base, a, reads, scope).T
        if "gram" in parts:
            gram = _mean_reads(bank_a, a, reads, scope)
            out["gram"] = 0.5 * (gram + gram.T)  # A A^T is symmetric; the read-out's two halves are averaged
        if "b_read" in parts:
            out["b_read"] = _mean_reads(bank_b, unit_rows, reads, scope, probe=True).T
        # averaging: (K - 1) adds per value read
        averaged = sum(v.numel() for v in out.values()) + (a.numel() if a is not None else 0)
        record_digital(scope, layer, adds=(reads - 1) * averaged)
    if "w0_sq" in parts:
        record_digital(scope, layer, mults=d_out * d_in, adds=d_out * d_in)
    return out


@torch.no_grad()
def calibrate(
    base: nn.Module,
    bank_a: nn.Module,
    bank_b: nn.Module,
    scope: LedgerScope | None = None,
    *,
    layer: str = "",
    reads: int = 0,
    storage: str = "readout",
) -> FusedCalibration:
    """Read out what the norms need from the programmed arrays (`read_parts`: noise-free with reads 0, else the mean
    of `reads` noisy analog read-outs), recording the read-out and the SRAM writes of the parts `storage` keeps in
    `scope`. Parts it does not keep are read again whenever the coefficients change (`FusedLinear.row_norm`)."""
    _check_readout(reads, storage)
    if bank_a.in_features != base.in_features or (bank_b.in_features, bank_b.out_features) != (
        bank_a.out_features, base.out_features,
    ):  # fmt: skip
        raise ValueError(
            f"calibrate {layer!r}: base {base.out_features}x{base.in_features}, A_stack "
            f"{bank_a.out_features}x{bank_a.in_features} and B_stack {bank_b.out_features}x{bank_b.in_features} "
            "do not fit together"
        )
    stored = _STORED[storage]
    parts = read_parts(base, bank_a, bank_b, stored, reads, scope, layer=layer)
    calibration = FusedCalibration(**{p: parts.get(p) for p in READOUT_PARTS}, reads=reads, storage=storage)
    record_digital(scope, layer, sram_writes=calibration.sram_words)
    return calibration


class FusedLinear(nn.Module):
    """A linear layer computed as analog W0 plus a fused analog LoRA bank, with digital coefficients and magnitude.

    `coefficients` is an (N,) Parameter that several layers may share (the same object); `magnitude` (d_out) is
    this layer's own. With `use_magnitude=False` the layer is W0 + dW (LoraHub's composition) and needs no
    calibration.
    """

    def __init__(
        self,
        base: nn.Module,
        bank_a: nn.Module,
        bank_b: nn.Module,
        *,
        n_entries: int,
        rank: int,
        alpha: float,
        coefficients: nn.Parameter,
        calibration: FusedCalibration | None = None,
        form: FusionForm = "lorahub",
        use_magnitude: bool = True,
        name: str = "",
    ) -> None:
        super().__init__()
        check_form(form)
        self.in_features, self.out_features = int(base.in_features), int(base.out_features)
        width = n_entries * rank
        if (bank_a.in_features, bank_a.out_features) != (self.in_features, width):
            raise ValueError(
                f"FusedLinear {name!r}: A_stack is {bank_a.out_features}x{bank_a.in_features}, "
                f"expected {width}x{self.in_features} (N={n_entries}, r={rank})"
            )
        if (bank_b.in_features, bank_b.out_features) != (width, self.out_features):
            raise ValueError(
                f"FusedLinear {name!r}: B_stack is {bank_b.out_features}x{bank_b.in_features}, "
                f"expected {self.out_features}x{width}"
            )
        self._check_coefficients(coefficients, n_entries, rank, name)
        if use_magnitude and calibration is None:
            raise ValueError(f"FusedLinear {name!r}: the DoRA magnitude needs a calibration read-out")
        self.base, self.bank_a, self.bank_b = base, bank_a, bank_b
        self._analog = tuple(_is_analog(m) for m in (base, bank_a, bank_b))
        """Which of base, A_stack, B_stack are `AnalogLayer`s (checked once: the forward runs per step)."""
        for module in (base, bank_a, bank_b):
            for parameter in module.parameters():
                parameter.requires_grad_(False)
        self.n_entries, self.rank = n_entries, rank
        self.alpha = float(alpha)
        self.scale = self.alpha / rank
        self.form = form
        self.name = name
        self.use_magnitude = use_magnitude
        self.coefficients = coefficients
        self.ledger: LedgerScope | None = None
        self._norm_for: torch.Tensor | None = None
        self.register_buffer("_norm", torch.empty(0), persistent=False)
        self.norm_reads = calibration.reads if calibration is not None else 0
        """Noisy read-outs averaged per calibration quantity (0 = noise-free), also for parts read on demand."""
        self.norm_storage = calibration.storage if calibration is not None else "readout"
        """What the layer keeps in SRAM for its norms (`fusion.fused.NORM_STORAGES`); the rest is read again from the
        arrays whenever the coefficients change."""
        self._has_calibration = calibration is not None
        if calibration is not None:
            for key, value in calibration.parts().items():
                self.register_buffer(f"cal_{key}", value.detach())
        if use_magnitude:
            self.magnitude = nn.Parameter(self.row_norm())
        else:
            self.register_parameter("magnitude", None)

    def _check_coefficients(self, coefficients: object, n_entries: int, rank: int, name: str) -> None:
        """One coefficient per bank entry; layers that mix the bank's outputs otherwise (`fusion.methods.mixing`)
        check their own."""
        if not isinstance(coefficients, nn.Parameter) or coefficients.shape != (n_entries,):
            raise ValueError(f"FusedLinear {name!r}: coefficients must be an ({n_entries},) nn.Parameter")

    # --- norms -------------------------------------------------------------------------------------------
    def recalibrate(self, scope: LedgerScope | None = None) -> None:
        """Read the calibration out again from the arrays as they are now (after drift, say): MVMs, no writes,
        recorded in `scope`. The trained coefficients and magnitudes are kept; the row norms then follow the
        weights the arrays hold now instead of those at programming time."""
        if not self._has_calibration:
            raise ValueError(f"FusedLinear {self.name!r} has no calibration to renew")
        fresh = calibrate(
            self.base, self.bank_a, self.bank_b, scope, layer=self.name, reads=self.norm_reads,
            storage=self.norm_storage,
        )  # fmt: skip
        for key, value in fresh.parts().items():
            self._buffers[f"cal_{key}"] = value.detach()
        self._norm_for = None

    @property
    def calibration(self) -> FusedCalibration | None:
        """The stored read-out (parts not kept are None)."""
        if not self._has_calibration:
            return None
        parts = {k: self._buffers.get(f"cal_{k}") for k in READOUT_PARTS}
        return FusedCalibration(**parts, reads=self.norm_reads, storage=self.norm_storage)

    def _norm_parts(self, scope: LedgerScope | None) -> dict[str, torch.Tensor]:
        """Every part the norms need: the stored ones, and the others read out of the arrays now (recorded)."""
        parts = {k: self._buffers[f"cal_{k}"] for k in READOUT_PARTS if f"cal_{k}" in self._buffers}
        missing = tuple(k for k in READOUT_PARTS if k not in parts)
        if missing:
            parts.update(read_parts(self.base, self.bank_a, self.bank_b, missing, self.norm_reads, scope,
                                    layer=self.name))  # fmt: skip
        return parts

    @torch.no_grad()
    def row_norm(self, c: torch.Tensor | None = None, scope: LedgerScope | None = None) -> torch.Tensor:
        """||W0 + dW(c)||_row from the calibration read-out, digitally; parts the storage option does not keep are
        read out of the arrays first (`norm_reads` noisy reads each). Records its arithmetic, SRAM reads and array
        reads in `scope`."""
        if not self._has_calibration:
            raise ValueError(f"FusedLinear {self.name!r} has no calibration: row norms are unavailable")
        parts = self._norm_parts(scope)
        cal_w0_sq, cal_cross, cal_gram, cal_b_read = (parts[k] for k in READOUT_PARTS)
        c = (self.coefficients if c is None else c).detach().to(torch.float32)
        n, r, d_out, s = self.n_entries, self.rank, self.out_features, self.scale
        width = n * r
        c_rows = c.repeat_interleave(r)  # c_i for each of entry i's r rows
        b_c = cal_b_read * c_rows  # row o: concat_i c_i B_i[o, :]
        if self.form == "lorahub":
            b_mix = b_c.view(d_out, n, r).sum(dim=1)  # row o of sum_i c_i B_i
            q_mix = (cal_cross * c_rows).view(d_out, n, r).sum(dim=1)  # row o of W0 (sum_i c_i A_i)^T
            g_mix = (cal_gram * torch.outer(c_rows, c_rows)).view(n, r, n, r).sum(dim=(0, 2))  # dA dA^T
            cross = (b_mix * q_mix).sum(dim=1)
            quad = ((b_mix @ g_mix) * b_mix).sum(dim=1)
            mults = 3 * d_out * width + 2 * width * width + d_out * (r * r + 2 * r)
            adds = 2 * d_out * width + width * width + d_out * (r * r + 2 * r)
        else:
            cross = (b_c * cal_cross).sum(dim=1)  # sum_i c_i B_i[o] . (A_i W0_o^T)
            quad = ((b_c @ cal_gram) * b_c).sum(dim=1)  # sum_ij c_i c_j B_i[o] A_i A_j^T B_j[o]
            mults = d_out * (width * width + 3 * width)
            adds = d_out * (width * width + 2 * width)
        squared = cal_w0_sq + 2 * s * cross + s * s * quad
        # Three terms scaled and summed, then a square root per row.
        record_digital(
            scope,
            self.name,
            mults=mults + 4 * d_out,
            adds=adds + 2 * d_out,
            sram_reads=self._calibration_words() + n,  # the stored parts only
            sram_writes=d_out,
        )
        return squared.clamp_min(torch.finfo(torch.float32).tiny).sqrt()

    def _calibration_words(self) -> int:
        """`FusedCalibration.sram_words` of the stored read-out, without building the record (once per norm)."""
        return sum(t.numel() for k, t in self._buffers.items() if k.startswith("cal_") and t is not None)

    def _current_norm(self, scope: LedgerScope | None) -> torch.Tensor:
        """n(c) for the present c, recomputed only when c changed since the last call. The cache is written
        straight into the module's dicts: `nn.Module.__setattr__` costs microseconds per call and this runs in every
        forward."""
        c = self.coefficients.detach()
        norm_for = self.__dict__["_norm_for"]
        if norm_for is None or not torch.equal(norm_for, c):
            self._buffers["_norm"] = self.row_norm(c, scope)
            self.__dict__["_norm_for"] = c.clone()
        return self._buffers["_norm"]

    @torch.no_grad()
    def reset_magnitude(self, scope: LedgerScope | None = None) -> None:
        """m = n(c) for the present c, so the layer equals W0 + dW(c) (DoRA's initialisation)."""
        if self.magnitude is None:
            raise ValueError(f"FusedLinear {self.name!r} has no magnitude")
        self.magnitude.copy_(self._current_norm(scope))

    # --- forward -----------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scope = module_ledger(self)
        n, r, d_out = self.n_entries, self.rank, self.out_features
        c = self.coefficients
        analog_base, analog_a, analog_b = self._analog
        base_out = layer_mvm(self.base, x, analog=analog_base)
        u = layer_mvm(self.bank_a, x, analog=analog_a).unflatten(-1, (n, r))
        if self.form == "lorahub":
            u_c = torch.einsum("...nr,n->...r", u, c)  # (sum_i c_i A_i) x
            u_mix = c[:, None] * u_c.unsqueeze(-2)  # B_stack @ this = (sum_i c_i B_i) u_c
            combine_mults, combine_adds = 2 * n * r, n * r
        else:
            u_mix = c[:, None] * u
            combine_mults, combine_adds = n * r, 0
        v = layer_mvm(self.bank_b, u_mix.flatten(-2), analog=analog_b)
        out = base_out + self.scale * v
        if self.use_magnitude:
            out = out * (self.magnitude / self._current_norm(scope))
        bias = getattr(self.base, "bias", None)
        if bias is not None:
            out = out + bias
        if scope is not None:
            vec = vectors(x, self.in_features)
            scale_mults = d_out if self.use_magnitude else 0
            # Per vector: the combine, s * v, the add to W0 x, the magnitude scale, the bias; c and the per-row
            # scale (m / n) and bias read from SRAM. Once per call: m / n (a divide per row).
            record_digital(
                scope,
                self.name,
                mults=vec * (combine_mults + d_out + scale_mults) + scale_mults,
                adds=vec * (combine_adds + 2 * d_out),
                sram_reads=vec * (n + scale_mults + d_out),
            )
            if out.requires_grad:
                out.register_hook(self._backward_cost(vec))
        return out

    def _backward_cost(self, vec: int):
        def hook(grad: torch.Tensor) -> None:
            n_r = self.n_entries * self.rank
            d_out = self.out_features
            per_c = 4 * n_r if self.form == "lorahub" else 2 * n_r
            per_m = 3 * d_out if self.use_magnitude else 0
            trainable = self.n_entries + (d_out if self.use_magnitude else 0)
            # Per vector: g * m / n and s * (.) back to the B array's input, g * z / n for dL/dm, and dL/dc from
            # the B array's transposed output (dot products with u_c and u_i, and c_i * dL/du_c back to the A
            # array). Gradient accumulators of c and m: read and written once per batch.
            record_digital(
                module_ledger(self),
                self.name,
                mults=vec * (per_c + per_m + d_out),
                adds=vec * (per_c + (d_out if self.use_magnitude else 0)),
                sram_reads=vec * trainable + trainable,
                sram_writes=trainable,
            )

        return hook

    def extra_repr(self) -> str:
        return (
            f"{self.in_features}, {self.out_features}, entries={self.n_entries}, rank={self.rank}, "
            f"alpha={self.alpha:g}, form={self.form}, magnitude={self.use_magnitude}"
        )
