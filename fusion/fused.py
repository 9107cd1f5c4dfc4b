"""`FusedLinear`: a frozen analog base, an analog LoRA bank and digital fusion coefficients and magnitude.

For one layer with base W0 (an analog array) and a bank of N rank-r LoRAs stored as two analog arrays, A_stack
(N*r x d_in) and B_stack (d_out x N*r), the forward never rewrites a cell:

    u  = A_stack x                                  analog MVM (N*r outputs)
    u' = concat_i(c_i * sum_j c_j u_j)              lorahub form: (sum_i c_i B_i)(sum_j c_j A_j) x = B_stack u'
       = concat_i(c_i * u_i)                        linear form:  sum_i c_i B_i A_i x               = B_stack u'
    v  = B_stack u'                                 analog MVM
    y  = (m / n) * (W0 x + s v) + bias              digital scale, n = ||W0 + dW||_row detached (DoRA)

The row norms n depend on c; they follow digitally from quantities read out once after programming
(`FusedCalibration`: W0 A_stack^T, A_stack A_stack^T, B_stack and ||W0 row||^2), so a new c costs digital
arithmetic and SRAM reads, never a write. Gradients reach c and m through the analog arrays' transposed MVMs
(straight-through quantizers) and digital arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from crossbar import AnalogLayer
from energy import LedgerScope
from fusion.accounting import module_ledger, record_digital, vectors
from fusion.reference import FusionForm, check_form

__all__ = ["FusedCalibration", "FusedLinear", "calibrate", "layer_mvm", "read_weight"]


def read_weight(layer: nn.Module) -> torch.Tensor:
    """What a layer's weights are: the programmed cells (noise-free read-out) of an analog layer, or the weight of
    a digital `nn.Linear`."""
    if isinstance(layer, AnalogLayer):
        return layer.programmed_weight().detach().to(torch.float32)
    return layer.weight.detach().to(torch.float32)


def layer_mvm(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """W x without bias: an analog layer's `mvm`, or a digital layer's matmul."""
    if isinstance(layer, AnalogLayer):
        return layer.mvm(x)
    return F.linear(x, layer.weight)


def _is_analog(layer: nn.Module) -> bool:
    return isinstance(layer, AnalogLayer)


@dataclass
class FusedCalibration:
    """One-time read-out of a layer and its bank arrays; the row norms for any c follow from it digitally."""

    w0_sq: torch.Tensor
    """(d_out,) ||W0 row||^2."""
    cross: torch.Tensor
    """(d_out, N*r) W0 A_stack^T: row o, column (i, k) is W0_o . A_i[k]."""
    gram: torch.Tensor
    """(N*r, N*r) A_stack A_stack^T."""
    b_read: torch.Tensor
    """(d_out, N*r) B_stack as read out."""

    @property
    def sram_words(self) -> int:
        """32-bit words to hold the calibration next to the layer."""
        return sum(t.numel() for t in (self.w0_sq, self.cross, self.gram, self.b_read))


@torch.no_grad()
def calibrate(
    base: nn.Module, bank_a: nn.Module, bank_b: nn.Module, scope: LedgerScope | None = None, *, layer: str = ""
) -> FusedCalibration:
    """Read out what the norms need from the programmed arrays, recording the read-out in `scope`.

    Values come from the arrays' noise-free read-out (`programmed_weight`): calibration is done once and can average
    repeated reads, so read noise and ADC error of the read-out are not modelled. The cost recorded is that of the
    MVMs a device would run, which are run here through the arrays with the ledger on: A_stack's rows by
    N*r transposed MVMs with unit vectors; W0 A_stack^T by N*r MVMs on W0 with those rows; A_stack A_stack^T by
    N*r MVMs on A_stack; B_stack by N*r unit-vector MVMs; W0 itself by d_in unit-vector MVMs, squared and summed
    per row digitally. The results go to SRAM.
    """
    w0, a, b = read_weight(base), read_weight(bank_a), read_weight(bank_b)
    d_out, d_in = w0.shape
    n_rows = a.shape[0]
    if a.shape[1] != d_in or b.shape != (d_out, n_rows):
        raise ValueError(
            f"calibrate {layer!r}: base {tuple(w0.shape)}, A_stack {tuple(a.shape)} and B_stack {tuple(b.shape)} "
            "do not fit together"
        )
    calibration = FusedCalibration(w0_sq=(w0 * w0).sum(dim=1), cross=w0 @ a.T, gram=a @ a.T, b_read=b)
    if scope is not None:
        # The MVMs a device runs for the read-out, recorded by count: running them here would draw read-noise keys
        # and (with a calibrated ADC) set ADC ranges from probe vectors, so recording would change the results.
        # The probe inputs are known (unit vectors, rows of A), so the cells they make conduct are priced.
        unit_rows = torch.eye(n_rows)
        if _is_analog(bank_a):
            bank_a.record_reads(n_rows, scope, transposed=True, inputs=unit_rows)
            bank_a.record_reads(n_rows, scope, inputs=a)
        if _is_analog(base):
            base.record_reads(n_rows, scope, inputs=a)
            base.record_reads(d_in, scope, inputs=torch.eye(d_in))
        if _is_analog(bank_b):
            bank_b.record_reads(n_rows, scope, inputs=unit_rows)
        record_digital(scope, layer, mults=d_out * d_in, adds=d_out * d_in, sram_writes=calibration.sram_words)
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
        if not isinstance(coefficients, nn.Parameter) or coefficients.shape != (n_entries,):
            raise ValueError(f"FusedLinear {name!r}: coefficients must be an ({n_entries},) nn.Parameter")
        if use_magnitude and calibration is None:
            raise ValueError(f"FusedLinear {name!r}: the DoRA magnitude needs a calibration read-out")
        self.base, self.bank_a, self.bank_b = base, bank_a, bank_b
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
        if calibration is not None:
            for key in ("w0_sq", "cross", "gram", "b_read"):
                self.register_buffer(f"cal_{key}", getattr(calibration, key).detach())
        if use_magnitude:
            self.magnitude = nn.Parameter(self.row_norm())
        else:
            self.register_parameter("magnitude", None)

    # --- norms -------------------------------------------------------------------------------------------
    def recalibrate(self, scope: LedgerScope | None = None) -> None:
        """Read the calibration out again from the arrays as they are now (after drift, say): MVMs, no writes,
        recorded in `scope`. The trained coefficients and magnitudes are kept; the row norms then follow the
        weights the arrays hold now instead of those at programming time."""
        if not hasattr(self, "cal_w0_sq"):
            raise ValueError(f"FusedLinear {self.name!r} has no calibration to renew")
        fresh = calibrate(self.base, self.bank_a, self.bank_b, scope, layer=self.name)
        for key in ("w0_sq", "cross", "gram", "b_read"):
            self._buffers[f"cal_{key}"] = getattr(fresh, key).detach()
        self._norm_for = None

    @property
    def calibration(self) -> FusedCalibration | None:
        if not hasattr(self, "cal_w0_sq"):
            return None
        return FusedCalibration(self.cal_w0_sq, self.cal_cross, self.cal_gram, self.cal_b_read)

    @torch.no_grad()
    def row_norm(self, c: torch.Tensor | None = None, scope: LedgerScope | None = None) -> torch.Tensor:
        """||W0 + dW(c)||_row from the calibration read-out, digitally (no array access). Records its arithmetic
        and SRAM reads in `scope`."""
        if not hasattr(self, "cal_w0_sq"):
            raise ValueError(f"FusedLinear {self.name!r} has no calibration: row norms are unavailable")
        c = (self.coefficients if c is None else c).detach().to(torch.float32)
        n, r, d_out, s = self.n_entries, self.rank, self.out_features, self.scale
        width = n * r
        c_rows = c.repeat_interleave(r)  # c_i for each of entry i's r rows
        b_c = self.cal_b_read * c_rows  # row o: concat_i c_i B_i[o, :]
        if self.form == "lorahub":
            b_mix = b_c.view(d_out, n, r).sum(dim=1)  # row o of sum_i c_i B_i
            q_mix = (self.cal_cross * c_rows).view(d_out, n, r).sum(dim=1)  # row o of W0 (sum_i c_i A_i)^T
            g_mix = (self.cal_gram * torch.outer(c_rows, c_rows)).view(n, r, n, r).sum(dim=(0, 2))  # dA dA^T
            cross = (b_mix * q_mix).sum(dim=1)
            quad = ((b_mix @ g_mix) * b_mix).sum(dim=1)
            mults = 3 * d_out * width + 2 * width * width + d_out * (r * r + 2 * r)
            adds = 2 * d_out * width + width * width + d_out * (r * r + 2 * r)
        else:
            cross = (b_c * self.cal_cross).sum(dim=1)  # sum_i c_i B_i[o] . (A_i W0_o^T)
            quad = ((b_c @ self.cal_gram) * b_c).sum(dim=1)  # sum_ij c_i c_j B_i[o] A_i A_j^T B_j[o]
            mults = d_out * (width * width + 3 * width)
            adds = d_out * (width * width + 2 * width)
        squared = self.cal_w0_sq + 2 * s * cross + s * s * quad
        # Three terms scaled and summed, then a square root per row.
        record_digital(
            scope,
            self.name,
            mults=mults + 4 * d_out,
            adds=adds + 2 * d_out,
            sram_reads=self.calibration.sram_words + n,  # type: ignore[union-attr]
            sram_writes=d_out,
        )
        return squared.clamp_min(torch.finfo(torch.float32).tiny).sqrt()

    def _current_norm(self, scope: LedgerScope | None) -> torch.Tensor:
        """n(c) for the present c, recomputed only when c changed since the last call."""
        c = self.coefficients.detach()
        if self._norm_for is None or not torch.equal(self._norm_for, c):
            self._norm = self.row_norm(c, scope)
            self._norm_for = c.clone()
        return self._norm

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
        base_out = layer_mvm(self.base, x)
        u = layer_mvm(self.bank_a, x).unflatten(-1, (n, r))
        if self.form == "lorahub":
            u_c = torch.einsum("...nr,n->...r", u, c)  # (sum_i c_i A_i) x
            u_mix = c[:, None] * u_c.unsqueeze(-2)  # B_stack @ this = (sum_i c_i B_i) u_c
            combine_mults, combine_adds = 2 * n * r, n * r
        else:
            u_mix = c[:, None] * u
            combine_mults, combine_adds = n * r, 0
        v = layer_mvm(self.bank_b, u_mix.flatten(-2))
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
