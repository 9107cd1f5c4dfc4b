from __future__ import annotations

import math

import pytest

from energy import COST_PRESETS, CostTable, cost_preset, pulse_energy_pj


def test_pulse_energy_matches_hand_calculation() -> None:
    # 2 V across 10 uS for 50 ns: 4 * 10e-6 * 50e-9 J = 2e-12 J = 2 pJ.
    assert pulse_energy_pj(2.0, 10.0, 50.0) == pytest.approx(2.0)
    # 4 V, 240 kOhm, 50 ns (NeuroSim V2.1): 16 / 240e3 * 50e-9 J = 3.33 pJ.
    assert pulse_energy_pj(4.0, 1e6 / 240e3, 50.0) == pytest.approx(3.3333, rel=1e-4)


def test_default_table_uses_its_own_physics() -> None:
    table = CostTable()
    assert table.write_pulse_pj == pytest.approx(pulse_energy_pj(2.0, 10.0, 50.0))
    assert table.verify_read_pj == pytest.approx(pulse_energy_pj(0.5, 20.0, 10.0))


@pytest.mark.parametrize("field", ["write_pulse_pj", "fp32_add_pj", "dram_access_ns", "verify_read_ns"])
@pytest.mark.parametrize("bad", [-1.0, math.inf, math.nan])
def test_bad_values_are_rejected_naming_the_field(field: str, bad: float) -> None:
    with pytest.raises(ValueError, match=field):
        CostTable(**{field: bad})


def test_non_numbers_are_rejected() -> None:
    with pytest.raises(ValueError, match="fp32_mult_pj"):
        CostTable(fp32_mult_pj="3.7")  # type: ignore[arg-type]


def test_adc_table_must_increase() -> None:
    with pytest.raises(ValueError, match="increasing"):
        CostTable(adc_pj_by_bits=((8, 1.0), (4, 0.5)))


def test_adc_energy_interpolates_and_extrapolates() -> None:
    table = CostTable()
    assert table.adc_conversion_pj(8) == pytest.approx(1.67)
    assert table.adc_conversion_pj(4) == pytest.approx(0.79)
    # One scaling: outside the table, its own end ratios per bit, extended geometrically.
    assert table.adc_conversion_pj(2) == pytest.approx(0.79 * (0.79 / 0.99) ** 2)
    assert table.adc_conversion_pj(12) == pytest.approx(2.38 * (2.38 / 1.97) ** 2)
    energies = [table.adc_conversion_pj(b) for b in range(1, 17)]
    assert all(a < b for a, b in zip(energies, energies[1:]))  # monotone in bits
    assert table.dac_conversion_pj(8) == pytest.approx(8 * 0.42)


def test_datapath_prices_digital_ops_and_words() -> None:
    from energy import Ledger

    assert CostTable().datapath == "int16"  # ISAAC's 16-bit fixed point
    for datapath, mult, add, bits in (
        ("fp32", 3.7, 0.9, 32), ("fp16", 1.1, 0.4, 16), ("bf16", 1.1, 0.4, 16), ("int16", 0.78, 0.05, 16),
        ("int8", 0.2, 0.03, 8),
    ):  # fmt: skip
        table = CostTable(datapath=datapath)
        ledger = Ledger(table)
        ledger.record("digital_mult", 10, phase="adapt")
        ledger.record("digital_add", 10, phase="adapt")
        ledger.record("sram_read", 4, phase="adapt")
        assert ledger.total(event="digital_mult") == pytest.approx(10 * mult)
        assert ledger.total(event="digital_add") == pytest.approx(10 * add)
        assert ledger.total(event="sram_read") == pytest.approx(4 * 5.0 * bits / 32)
    with pytest.raises(ValueError, match="datapath"):
        CostTable(datapath="fp64")  # type: ignore[arg-type]


def test_presets_and_overrides() -> None:
    assert set(COST_PRESETS) >= {"isaac_horowitz", "neurosim_v21"}
    table = cost_preset("isaac_horowitz", fp32_add_pj=1.5)
    assert table.fp32_add_pj == 1.5
    with pytest.raises(ValueError, match="unknown cost preset"):
        cost_preset("nope")
    with pytest.raises(ValueError, match="not_a_field"):
        cost_preset("isaac_horowitz", not_a_field=1.0)


def test_every_row_has_a_source() -> None:
    for table in COST_PRESETS.values():
        for name, _value, unit, source in table.as_rows():
            assert source.strip(), name
            assert unit in ("pJ", "ns", "pJ by bits", "-")
