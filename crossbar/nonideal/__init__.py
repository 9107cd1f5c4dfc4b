"""Device non-idealities as plug-ins: one registry per kind, each entry a model with its constants, sources, the
named parameter record its kernel reads, its NumPy twin (`tests/naive_*.py`) and its fidelity rows
(`benchmarks/fidelity.py`).

- `PROGRAMMING_NOISE_MODELS` (`DeviceConfig.programming_noise`): the fitted sigma(G) after write-verify;
- `DRIFT_MODELS` (`DeviceConfig.drift_model`): relaxation after programming;
- `READ_NOISE_MODELS` (`DeviceConfig.read_noise_model`): the noise of every MVM read.

A model from outside the package registers itself (`DRIFT_MODELS.register(DriftModel(...))`) in a file a scenario
names in `plugins:`; its name is then valid in `device.overrides`. Imports nothing of `crossbar` but itself, so
`crossbar.device` can validate against the registries.
"""

from crossbar.nonideal.drift import DRIFT_MODELS, KERNEL_PER_CELL, CmoDriftStep, DriftModel, WanDriftStep
from crossbar.nonideal.programming_noise import PROGRAMMING_NOISE_MODELS, ProgrammingNoiseModel, SigmaPolynomial
from crossbar.nonideal.read_noise import READ_NOISE_MODELS, ReadNoiseModel, ReadNoiseParams
from crossbar.nonideal.registry import Registry

__all__ = [
    "DRIFT_MODELS",
    "KERNEL_PER_CELL",
    "PROGRAMMING_NOISE_MODELS",
    "READ_NOISE_MODELS",
    "CmoDriftStep",
    "DriftModel",
    "ProgrammingNoiseModel",
    "ReadNoiseModel",
    "ReadNoiseParams",
    "Registry",
    "SigmaPolynomial",
    "WanDriftStep",
]
