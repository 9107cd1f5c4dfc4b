"""What every MVM engine shares: derived operands behind the array's generation counter.

An engine computes the MVMs of one array (`crossbar.array.AnalogArray`) on one backend: `crossbar.engine_numba`
(numba kernels, CPU) or `crossbar.engine_torch` (pure torch, any torch device); `crossbar.layers.MVM_ENGINES`
names them. Whatever an engine derives from the array (tile views, MVM settings, ledger pricing, conductance sums)
lives in one store that is emptied when the array's `generation` differs from the one it was built for. The array
bumps its generation on every write, drift, reseed, ADC calibration, buffer or config replacement, move or load;
no other rule invalidates anything. In-place changes that bypass the array (writing into a buffer's memory) are
seen by the zero-copy views, but not by the sums: call `array.bump_generation()` after them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch

from crossbar.mvm import MvmSettings
from crossbar.pricing import MvmPricing, MvmTally, conductance_sums
from crossbar.scheme import ConductanceSums
from energy import CostTable

if TYPE_CHECKING:
    from crossbar.array import AnalogArray

__all__ = ["MvmEngine"]


class MvmEngine:
    """The MVMs of one array on one backend, with the operands derived from its state kept per generation.
    Subclasses implement `run`."""

    kind: ClassVar[str] = ""
    """The name the layer's `mvm_backend` uses for this engine."""

    def __init__(self) -> None:
        self._generation = -1
        self._derived: dict[object, object] = {}

    def derived(self, array: AnalogArray) -> dict[object, object]:
        """The store of everything derived from `array`: emptied when its generation moved on."""
        if array.generation != self._generation:
            self._derived = {}
            self._generation = array.generation
        return self._derived

    def mvm(
        self,
        array: AnalogArray,
        x2: torch.Tensor,
        *,
        transposed: bool = False,
        bias: torch.Tensor | None = None,
        settings: MvmSettings | None = None,
    ) -> torch.Tensor:
        """The MVM (transposed: d @ W) of x2 (B, width) on the array, plus `bias` (forward only), as (B, out)
        float32 on the engine's device; `settings` replaces the array's own for this call (a read-out's ADC
        range)."""
        kept = settings is None
        settings = self.settings(array, transposed=transposed) if kept else settings
        return self.run(array, x2, settings, transposed=transposed, bias=bias, kept=kept)

    def forward(
        self, array: AnalogArray, x2: torch.Tensor, *, bias: torch.Tensor | None = None, tally: MvmTally | None = None
    ) -> torch.Tensor:
        """`mvm` forward with the array's own settings (a layer's forward), adding x2's activity (what the DAC
        sees) to `tally` for the ledger once the MVM succeeded. An engine may do both in one pass."""
        y = self.mvm(array, x2, bias=bias)
        if tally is not None:
            tally.add(x2.shape[0], x2)
        return y

    def exact_transposed(self, array: AnalogArray, d2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(d2 @ W_programmed, d2 * out_scale): the "exact" backward of every engine, noise-free and unquantised,
        as (d2 * out_scale) @ (G+ - G-)^T on the buffer's device, without forming W (bit for bit the product of the
        scaled gradient and a transposed view of the buffer; both operands kept per generation). The scaled
        gradient is what the array's DAC would see (the ledger prices it)."""
        g_t, out_scale = self.exact_operands(array)
        scaled = d2.to(device=g_t.device, dtype=torch.float32) * out_scale
        return torch.mm(scaled, g_t), scaled

    def exact_operands(self, array: AnalogArray) -> tuple[torch.Tensor, torch.Tensor]:
        """((G+ - G-)^T as a (d_out, d_in) view of the buffer, out_scale as float32), kept per generation."""
        derived = self.derived(array)
        kept = derived.get("exact")
        if kept is None:
            array.check_ready()
            g = array.g_diff_us.reshape(-1, array.out_features)[: array.in_features]
            kept = derived["exact"] = (g.T, array.out_scale.to(torch.float32))
        return kept

    def backward_exact(self, array: AnalogArray, d2: torch.Tensor, tally: MvmTally | None) -> torch.Tensor:
        """`exact_transposed` of d2 (the input gradient of the exact backward), adding the scaled gradient's
        activity (what the DAC of the transposed MVM the ledger prices would see) to `tally`."""
        grad_x, scaled = self.exact_transposed(array, d2)
        if tally is not None:
            tally.add(d2.shape[0], scaled)
        return grad_x

    def run(
        self, array: AnalogArray, x2: torch.Tensor, settings: MvmSettings, *, transposed: bool,
        bias: torch.Tensor | None, kept: bool,
    ) -> torch.Tensor:  # fmt: skip
        """`mvm` with its settings resolved (`kept`: the array's own, whose derived operands may be kept); one
        read-noise key drawn from the array (`next_key`) per call, after every check that may raise."""
        raise NotImplementedError

    def settings(self, array: AnalogArray, *, transposed: bool) -> MvmSettings:
        """The MVM settings of one direction with the array's ADC ranges; a forward MVM of a device with calibrated
        ADC ranges raises until they are calibrated."""
        ranges = array.adc_ranges_transposed if transposed else array.adc_ranges
        if ranges is None and not transposed and array.array_config.adc_range == "calibrated":
            raise RuntimeError(
                f"AnalogLinear {array.name or '(unnamed)'!r}: device.adc_range is 'calibrated' but its ADC ranges "
                "were never calibrated: run the calibration phase (crossbar.adc_calibration, or "
                "layer.calibrate_adc(x) on calibration data) after programming"
            )
        derived = self.derived(array)
        settings = derived.get(("settings", transposed))
        if settings is None:
            settings = MvmSettings.from_device(array.array_config, adc_ranges=ranges)
            derived[("settings", transposed)] = settings
        return settings

    def conductance(self, array: AnalogArray) -> ConductanceSums:
        """Per-line summed G+ + G- for the ledger (from a CPU copy when the arrays live elsewhere)."""
        derived = self.derived(array)
        sums = derived.get("conductance")
        if sums is None:
            sums = derived["conductance"] = conductance_sums(array.cpu_state())
        return sums

    def pricing(self, array: AnalogArray, costs: CostTable, *, transposed: bool, bias: bool) -> MvmPricing:
        """The `crossbar.pricing.MvmPricing` of one direction under the cost table `costs` (one per table)."""
        derived = self.derived(array)
        pricing = derived.get(("pricing", transposed, bias))
        if pricing is None or pricing.costs is not costs:
            pricing = MvmPricing.of(array.array_config, costs, d_in=array.in_features, d_out=array.out_features,
                                    transposed=transposed, bias=bias)  # fmt: skip
            derived[("pricing", transposed, bias)] = pricing
        return pricing
