"""Energy accounting: the cited cost table and the ledger every energy, write and wear figure comes from.

Imports nothing else of crossbar-sim; everything else may import it.
"""

from energy.costs import COST_PRESETS, DEFAULT_COST_PRESET, CostTable, cost_preset, pulse_energy_pj
from energy.ledger import EVENTS, KEYS, PHASES, WRITE_EVENTS, Ledger, LedgerRow, LedgerScope

__all__ = [
    "COST_PRESETS",
    "DEFAULT_COST_PRESET",
    "EVENTS",
    "KEYS",
    "PHASES",
    "WRITE_EVENTS",
    "CostTable",
    "Ledger",
    "LedgerRow",
    "LedgerScope",
    "cost_preset",
    "pulse_energy_pj",
]
