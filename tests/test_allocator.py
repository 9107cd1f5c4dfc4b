"""The run processes' allocator policy: large freed buffers are reused instead of faulted in again."""

from __future__ import annotations

import subprocess
import sys

import pytest

from scenarios.allocator import keep_freed_memory

_FAULTS = """
import resource, sys, torch
from torch import nn
from crossbar import AnalogLinear, device_preset
from scenarios.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
else:  # glibc's default threshold (128 KiB), held there: setting it turns off glibc's own adaptive raise of it,
    # which otherwise depends on what the process freed before (numba compiling, thread start-up) and makes the
    # baseline vary from run to run
    import ctypes
    assert ctypes.CDLL(None).mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
torch.set_num_threads(1)
layer = AnalogLinear.from_linear(nn.Linear(256, 1024), device_preset("ideal"), seed=0).eval()
layer.program()
x = torch.randn(2048, 256)  # tile partial sums of 8 MB per forward
with torch.no_grad():
    layer(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(30):
        layer(x)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True)
    return int(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_freed_buffers_are_reused_instead_of_faulted_in_again():
    default = _page_faults("default")
    kept = _page_faults("keep")
    # mmap per buffer faults every large buffer in again (~2,600 faults per forward here); kept memory faults in
    # at most a few buffers once, while the heap settles (0 to ~8,000 faults over the 30 forwards)
    assert kept * 4 < default, (kept, default)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_the_policy_is_idempotent():
    assert keep_freed_memory() and keep_freed_memory()
