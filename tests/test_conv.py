"""AnalogConv2d: equal to nn.Conv2d on the ideal preset, picked up by convert_to_analog, one MVM per output pixel in
the ledger, programmed and saved like any analog layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from crossbar import AnalogConv2d, analog_layers, convert_to_analog, device_preset, program, record_all_to
from energy import Ledger

IDEAL = device_preset("ideal")


@pytest.mark.parametrize(
    "geometry",
    [dict(kernel_size=3, padding=1), dict(kernel_size=(2, 3), stride=2), dict(kernel_size=3, dilation=2, padding=2)],
)
def test_ideal_analog_conv_equals_conv2d(geometry) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, **geometry)
    analog = AnalogConv2d.from_conv2d(conv, IDEAL, seed=0, name="conv")
    analog.linear.program()
    x = torch.randn(2, 3, 9, 8)
    with torch.no_grad():
        want, got = conv(x), analog(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_convert_to_analog_swaps_convs_and_records_one_mvm_per_pixel() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    analog = convert_to_analog(model, IDEAL, seed=0)
    assert isinstance(analog[0], AnalogConv2d) and [n for n, _ in analog_layers(analog)] == ["0.linear", "3"]
    assert analog[0].linear.name == "0"  # the ledger's layer key is the conv's own name
    ledger = Ledger()
    program(analog, ledger.scope(phase="deploy_base"))
    x = torch.randn(2, 1, 6, 6)
    with torch.no_grad(), record_all_to(analog, ledger.scope(phase="inference")):
        torch.testing.assert_close(analog(x), model(x), rtol=1e-4, atol=1e-4)
    conversions = {r.layer: r.count for r in ledger.rows(phase="inference", event="adc_conversion")}
    # one ADC conversion per output and MVM (ideal preset): 36 pixel MVMs per image for the conv, one for the fc
    assert conversions == {"0": 2 * 36 * 4, "3": 2 * 1 * 3}
    assert ledger.cell_write_pulses(phase="deploy_base", layer="0") > 0


def test_grouped_conv_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="groups=2 is not supported"):
        convert_to_analog(nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)), IDEAL)
    kept = convert_to_analog(nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Linear(2, 2)), IDEAL, exclude=["0"])
    assert isinstance(kept[0], nn.Conv2d)
