"""The scenario runner (DESIGN section 6): train base -> program base -> train bank -> program bank -> for each
target task and method: adapt, evaluate (fresh and after drift) -> write results.

Resuming. Every finished phase leaves a checkpoint in `<run>/checkpoints/`, written atomically:
- `base_model.safetensors` (+ `.json` with its clean accuracy): the trained digital base;
- `bank/` (`LoRABank.save`: safetensors + manifest): the trained bank;
- `deploy_ledger.json`: the ledger of programming base and bank;
- `units/<task>__<method>.json`: one finished (task, method) unit: its metrics rows, wear and ledger rows.
On restart the training phases and finished units are loaded, not redone. Programming base and bank is replayed
instead of loaded: it is a pure function of the seed and the trained weights and takes seconds, and the replayed
ledger must equal the checkpointed one (a check that the replay really is deterministic). A unit's randomness is
derived from (seed, task, method), never from what ran before it, so a resumed run ends with the same
`metrics.csv` as an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from tqdm.auto import tqdm

from crossbar import DeviceConfig, analog_layers, convert_to_analog, derive_seed, device_preset, program, record_all_to
from energy import WRITE_EVENTS, Ledger, atomic_write_bytes, atomic_write_text, cost_preset
from fusion import FusedLinear, LoRABank, ProgrammedBank, adapt, build_bank, program_bank
from fusion.digital_state import digital_state
from scenarios.errors import ScenarioError
from scenarios.results import UnitResult, write_results
from scenarios.schema import MethodSpec, Scenario
from scenarios.stamp import run_stamp
from scenarios.workloads import TaskData, accuracy, build_model, build_tasks, train_classifier

__all__ = ["run_scenario"]

log = logging.getLogger("crossbar_sim.runner")

RUN_THREADS = 1
"""Torch and numba threads during a run. The default study's matrices are 64-128 wide: a second thread costs more
in synchronisation than it saves (measured: up to 20x slower training on a busy 2-core machine)."""


def run_scenario(scenario: Scenario, out_dir: Path, *, fresh: bool = False, progress: bool = True) -> Path:
    """Run every phase of `scenario` into `out_dir` (resuming from its checkpoints unless `fresh`) and return the
    run directory, which then holds the resolved config, results.json, metrics.csv, ledger.csv, figures and
    report.md."""
    run_dir = Path(out_dir)
    _prepare_run_dir(run_dir, scenario, fresh)
    with _threads(RUN_THREADS), _log_to(run_dir / "run.log"):
        log.info("run %s into %s", scenario.name, run_dir)
        return _Run(scenario, run_dir, progress).execute()


class _Run:
    def __init__(self, scenario: Scenario, run_dir: Path, progress: bool) -> None:
        self.scenario = scenario
        self.run_dir = run_dir
        self.ckpt = run_dir / "checkpoints"
        self.progress = progress
        self.device: DeviceConfig = device_preset(scenario.device.preset, **scenario.device.overrides)
        self.costs = cost_preset(scenario.costs.preset, **scenario.costs.overrides)

    def execute(self) -> Path:
        scenario = self.scenario
        suite = build_tasks(scenario)
        self.encoder = None
        if scenario.model.kind == "hf_encoder":  # pretrained encoder, zero-shot head per task (scenarios.encoder)
            from scenarios.encoder import EncoderWorkload

            self.encoder = EncoderWorkload(scenario, [suite.base, *suite.sources.values(), *suite.targets.values()])
        base = self._base_model(suite.base, suite.n_classes, suite.image_shape)
        deploy_ledger = Ledger(self.costs)
        analog = convert_to_analog(base, self.device, seed=derive_seed(scenario.seed, "analog"))
        program(analog, deploy_ledger.scope(phase="deploy_base"))
        bank = self._bank(base, list(suite.sources.values()))
        programmed_bank = program_bank(
            analog, bank, self.device, deploy_ledger.scope(phase="deploy_bank"), seed=derive_seed(scenario.seed, "bank")
        )
        self._check_deploy_replay(deploy_ledger)
        units: list[UnitResult] = []
        work = [(task, spec) for task in suite.targets.values() for spec in scenario.methods]
        for task_data, spec in tqdm(work, desc="adapt+evaluate", disable=not self.progress):
            units.append(self._unit(analog, programmed_bank, task_data, spec))
        return write_results(self.run_dir, scenario, units, deploy_ledger, plots=scenario.outputs.plots,
                             formats=tuple(scenario.outputs.formats))  # fmt: skip

    # --- phase: base model -----------------------------------------------------------------------------------
    def _base_model(self, data: TaskData, n_classes: int, image_shape: tuple[int, int, int]) -> nn.Module:
        spec = self.scenario.model
        if self.encoder is not None:  # pretrained: nothing to train; its zero-shot accuracy on the base task
            model = self.encoder.model
            path = self.ckpt / "base_model.json"
            if not path.exists():
                atomic_write_text(path, json.dumps({"zero_shot_accuracy": self.encoder.accuracy(data)}))
            return model
        model = build_model(spec, n_classes, image_shape, seed=derive_seed(self.scenario.seed, "base_init"))
        path = self.ckpt / "base_model.safetensors"
        if path.exists():
            model.load_state_dict(load_file(path))
            log.info("base model loaded from %s", path)
        else:
            train_classifier(
                model, data.x_train, data.y_train, epochs=spec.base_epochs, lr=spec.base_lr,
                batch_size=spec.batch_size, seed=derive_seed(self.scenario.seed, "base_train"), desc="base model",
                progress=self.progress,
            )  # fmt: skip
            base_accuracy = accuracy(model, data.x_test, data.y_test)
            _save_tensors(path, model.state_dict())
            atomic_write_text(path.with_suffix(".json"), json.dumps({"clean_accuracy": base_accuracy}))
            log.info("base model trained: %.4f accuracy on %s", base_accuracy, data.name)
        model.eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        return model

    # --- phase: bank -----------------------------------------------------------------------------------------
    def _bank(self, base: nn.Module, sources: list[TaskData]) -> LoRABank:
        directory = self.ckpt / "bank"
        if (directory / "manifest.json").exists():
            log.info("bank loaded from %s", directory)
            return LoRABank.load(directory)
        spec = self.scenario.bank
        settings = dict(
            target_modules=list(spec.modules),
            rank=spec.rank,
            alpha=spec.alpha,
            epochs=spec.epochs,
            batch_size=spec.batch_size or self.scenario.model.batch_size,
            lr=spec.lr,
            seed=derive_seed(self.scenario.seed, "bank_train"),
            progress=self.progress,
        )
        if self.encoder is not None:  # each source task's LoRA trains with that task's zero-shot classes
            bank = self.encoder.build_bank(sources, **settings)
        else:
            bank = build_bank(base, {task.name: (task.x_train, task.y_train) for task in sources}, **settings)
        staging = self.ckpt / ".bank.partial"
        shutil.rmtree(staging, ignore_errors=True)
        bank.save(staging)
        staging.rename(directory)  # a directory appears complete or not at all
        log.info("bank of %d LoRAs trained", bank.n_entries)
        return bank

    def _check_deploy_replay(self, ledger: Ledger) -> None:
        path = self.ckpt / "deploy_ledger.json"
        records = ledger.to_records()
        if path.exists():
            saved = json.loads(path.read_text())
            if saved != json.loads(json.dumps(records)):
                raise RuntimeError(f"replayed programming differs from the checkpoint {path}: non-determinism bug")
        else:
            atomic_write_text(path, json.dumps(records))

    # --- phase: adapt and evaluate one (task, method) --------------------------------------------------------
    def _unit(self, analog: nn.Module, bank: ProgrammedBank, task: TaskData, spec: MethodSpec) -> UnitResult:
        path = self.ckpt / "units" / f"{task.name}__{spec.key}.json"
        if path.exists():
            return UnitResult.from_json(json.loads(path.read_text()))
        seed = derive_seed(self.scenario.seed, "unit", task.name, spec.key)
        ledger = Ledger(self.costs)
        x = torch.cat([torch.as_tensor(task.x_train), torch.as_tensor(task.x_val)])
        y = torch.cat([torch.as_tensor(task.y_train), torch.as_tensor(task.y_val)])
        val_fraction = len(task.x_val) / len(x) if len(task.x_val) else 0.0
        if self.encoder is not None:
            analog = self.encoder.for_task(analog, task.name)
        result = adapt(
            spec.name, analog, bank, (x, y), spec.config(), self.device, ledger, task.name, seed,
            val_fraction=val_fraction, progress=False,
        )  # fmt: skip
        # adapt() files its records under the method's registered name; results are filed under the entry's key
        ledger = _relabel_method(ledger, spec.name, spec.key)
        wear = _wear_pulses_per_cell(ledger, result.model)
        state = digital_state(result.model, result.trainable_params, gradient_based=spec.name != "lorahub")
        accuracies = self._evaluate(result.model, task, spec.key, seed, ledger)
        unit = UnitResult(
            task=task.name,
            method=spec.key,
            accuracies=accuracies,
            trainable_params=result.trainable_params,
            wear_pulses_per_cell=wear,
            endurance_pulses=self.device.endurance_pulses,
            n_test=len(task.x_test),
            wall_s=result.wall_s,
            ledger_records=ledger.to_records(),
            digital_state=state.as_dict(),
        )
        atomic_write_text(path, json.dumps(unit.to_json()))
        log.info("%s / %s: accuracy %s, %d trainable", task.name, spec.key, accuracies, result.trainable_params)
        return unit

    def _evaluate(
        self, model: nn.Module, task: TaskData, method: str, seed: int, ledger: Ledger
    ) -> dict[float, list[float]]:
        """Test accuracy per drift time and repeat. Each (drift time, repeat) evaluates its own copy with read
        noise and drift drawn from (seed, drift time, repeat); the first fresh evaluation also records the
        inference energy into the ledger (phase `inference`)."""
        evaluate = self.scenario.evaluate
        results: dict[float, list[float]] = {}
        for drift_s in evaluate.drift_times_s:
            results[float(drift_s)] = []
            for repeat in range(evaluate.repeats):
                copy_ = copy.deepcopy(model)
                _reseed(copy_, derive_seed(seed, "evaluate", repr(float(drift_s)), str(repeat)))
                if drift_s > 0:
                    for _, layer in analog_layers(copy_):
                        layer.drift_to(float(drift_s))
                    if evaluate.recalibrate_after_drift:
                        scope = (
                            ledger.scope(phase="calibration", task=task.name, method=method) if repeat == 0 else None
                        )
                        for module in copy_.modules():
                            if isinstance(module, FusedLinear) and module.use_magnitude:
                                module.recalibrate(scope)
                record = drift_s == evaluate.drift_times_s[0] and repeat == 0
                scope = ledger.scope(phase="inference", task=task.name, method=method) if record else None
                with record_all_to(copy_, scope):
                    results[float(drift_s)].append(accuracy(copy_, task.x_test, task.y_test))
        return results


# --- helpers ------------------------------------------------------------------------------------------------
def _prepare_run_dir(run_dir: Path, scenario: Scenario, fresh: bool) -> None:
    """Create the run directory, or check that an existing one belongs to the same scenario."""
    config_path = run_dir / "config.json"
    resolved = scenario.resolved_dict()
    if fresh and run_dir.exists():
        for name in ("checkpoints", "figures"):
            shutil.rmtree(run_dir / name, ignore_errors=True)
        for name in ("config.json", "results.json", "metrics.csv", "ledger.csv", "report.md", "run.log"):
            (run_dir / name).unlink(missing_ok=True)
    if config_path.is_file():
        previous = json.loads(config_path.read_text()).get("scenario")
        if previous != json.loads(json.dumps(resolved)):
            raise ScenarioError(
                f"{run_dir}: holds a run of a different scenario configuration; use --fresh to start over or "
                "--out to choose another directory"
            )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(config_path, json.dumps({"scenario": resolved, **run_stamp()}, indent=1))
    except OSError as error:
        raise ScenarioError(f"{run_dir}: cannot write the run directory ({error.strerror or error})") from None


def _relabel_method(ledger: Ledger, old: str, new: str) -> Ledger:
    if old == new:
        return ledger
    records = [{**r, "method": new if r["method"] == old else r["method"]} for r in ledger.to_records()]
    return Ledger.from_records(records, ledger.costs)


def _wear_pulses_per_cell(ledger: Ledger, adapted: nn.Module) -> float:
    """Write pulses per cell of the most-written array during adaptation: the ledger's exact pulse count of each
    array divided by its cells. This is the wear that limits how many task switches the arrays survive. (The
    per-cell counters are not used here: beyond 65,534 pulses of endurance they count in coarse stochastic steps.)
    """
    pulses = ledger.group_by("layer", field="count", phase="adapt", event=WRITE_EVENTS)
    cells = {layer.name: layer.state.n_cells for _, layer in analog_layers(adapted) if layer.state is not None}
    worst = 0.0
    for (layer,), count in pulses.items():
        if layer not in cells:
            raise RuntimeError(f"ledger records writes to {layer!r}, which is not an array of the adapted model")
        worst = max(worst, count / cells[layer])
    return worst


def _reseed(model: nn.Module, seed: int) -> None:
    for name, layer in analog_layers(model):
        layer.reseed_noise(derive_seed(seed, name))


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save as to_bytes

    atomic_write_bytes(path, to_bytes({k: v.detach().contiguous() for k, v in tensors.items()}))


@contextmanager
def _threads(n: int) -> Iterator[None]:
    """Run torch and the numba kernels on `n` threads, restoring both afterwards."""
    import numba

    before = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(n)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        numba.set_num_threads(before[1])


@contextmanager
def _log_to(path: Path) -> Iterator[None]:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("crossbar_sim")
    root.addHandler(handler)
    previous_level = root.level
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
        handler.close()
