"""Plain digital reference of the fused layer: the math of DESIGN section 5 on dense weight matrices.

`FusedLinear` computes the same thing on the arrays without ever forming a weight; tests compare the two, and the
calibration's row norms are checked against `fused_row_norm` computed from the dense matrices.
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["FusionForm", "FUSION_FORMS", "fused_delta", "fused_row_norm", "fused_weight"]

FusionForm = Literal["lorahub", "linear"]
FUSION_FORMS: tuple[str, ...] = ("lorahub", "linear")


def check_form(form: str) -> str:
    if form not in FUSION_FORMS:
        raise ValueError(f"form must be one of {list(FUSION_FORMS)}, got {form!r}")
    return form


def fused_delta(
    a_stack: torch.Tensor, b_stack: torch.Tensor, c: torch.Tensor, scale: float, form: FusionForm = "lorahub"
) -> torch.Tensor:
    """dW (d_out x d_in) of a bank with N = len(c) entries stacked as A_stack (N*r x d_in), B_stack (d_out x N*r).

    lorahub: s (sum_i c_i B_i)(sum_i c_i A_i); linear: s sum_i c_i B_i A_i.
    """
    check_form(form)
    n_entries = c.shape[0]
    rank = a_stack.shape[0] // n_entries
    if a_stack.shape[0] != n_entries * rank or b_stack.shape[1] != n_entries * rank:
        raise ValueError(
            f"stacks of {a_stack.shape[0]} rows and {b_stack.shape[1]} columns do not hold {n_entries} entries"
        )
    a = a_stack.view(n_entries, rank, -1)
    b = b_stack.view(b_stack.shape[0], n_entries, rank)
    if form == "lorahub":
        a_mix = torch.einsum("n,nrk->rk", c, a)
        b_mix = torch.einsum("n,onr->or", c, b)
        return scale * b_mix @ a_mix
    return scale * torch.einsum("n,onr,nrk->ok", c, b, a)


def fused_row_norm(w0: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """||W0 + dW|| per output row (the DoRA weight norm, d_out values)."""
    return torch.linalg.vector_norm(w0 + delta, dim=1)


def fused_weight(
    w0: torch.Tensor,
    a_stack: torch.Tensor,
    b_stack: torch.Tensor,
    c: torch.Tensor,
    magnitude: torch.Tensor | None,
    scale: float,
    form: FusionForm = "lorahub",
) -> torch.Tensor:
    """W' = m * (W0 + dW) / ||W0 + dW||_row with the norm detached (DoRA section 4.3, peft dora.py); without a
    magnitude, W0 + dW. Differentiable in c and m, for autograd comparisons."""
    delta = fused_delta(a_stack, b_stack, c, scale, form)
    weight = w0 + delta
    if magnitude is None:
        return weight
    norm = fused_row_norm(w0, delta).detach()
    return (magnitude / norm)[:, None] * weight
