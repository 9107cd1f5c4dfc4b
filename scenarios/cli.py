"""The `crossbar-sim` command line (typer).

User errors (bad arguments, bad scenario files) print one line on stderr and exit 2; nothing else does.
"""

from __future__ import annotations

import errno
import sys
from pathlib import Path

import typer

from energy import COST_PRESETS, DEFAULT_COST_PRESET
from scenarios.bundled import BUNDLED_SCENARIOS
from scenarios.stamp import package_version

app = typer.Typer(
    name="crossbar-sim",
    help="Simulate ReRAM crossbar accelerators and on-device LoRA fusion, with an energy ledger.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class UserError(Exception):
    """A mistake in the user's input: reported as one line, exit code 2."""


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"crossbar-sim {package_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Simulate ReRAM crossbar accelerators and on-device LoRA fusion, with an energy ledger."""


@app.command()
def presets() -> None:
    """List the energy cost presets and device presets with their values, units and sources."""
    for name, table in COST_PRESETS.items():
        default = " (default)" if name == DEFAULT_COST_PRESET else ""
        typer.echo(f"cost preset: {name}{default}")
        typer.echo(f"  sources: {table.sources}")
        for field_name, value, unit, source in table.as_rows():
            typer.echo(f"  {field_name:<22} {value:>14} {unit:<10} {source}")
        typer.echo("")
    for line in _device_preset_lines():
        typer.echo(line)


def _device_preset_lines() -> list[str]:
    from crossbar.presets import device_preset_rows  # an import failure is an error, never a shorter list

    return device_preset_rows()


_SCENARIO_HELP = f"Scenario YAML file, or the name of a bundled scenario ({', '.join(BUNDLED_SCENARIOS)})."
_BUNDLED_EPILOG = "Bundled scenarios:\n\n\b\n" + "\n".join(  # \b: click keeps the table's lines as they are
    f"  {name:<15} {what}" for name, what in BUNDLED_SCENARIOS.items()
)
_SET_HELP = "Override a setting before validation, e.g. --set bank.rank=8 (value parsed as YAML); repeatable."


_SWEEP_HELP = (
    "Sweep a key path over values, e.g. --sweep device.overrides.read_noise_frac=0.005,0.01; repeatable (grid)."
)


def _load_study(scenario: str, overrides: list[str], sweeps: list[str]):
    """Load, validate and expand a scenario's sweep; any problem in it becomes a one-line UserError."""
    from scenarios.loading import ScenarioError, load_study

    try:
        return load_study(scenario, overrides, sweeps)
    except ScenarioError as error:
        raise UserError(str(error)) from None


@app.command()
def validate(
    scenario: str = typer.Argument(..., help=_SCENARIO_HELP, show_default=False),
    overrides: list[str] = typer.Option([], "--set", help=_SET_HELP, metavar="KEY.PATH=VALUE"),
    sweeps: list[str] = typer.Option([], "--sweep", help=_SWEEP_HELP, metavar="KEY.PATH=V1,V2"),
) -> None:
    """Check a scenario file (schema, presets, task names, npz files, every sweep point) without running it, and
    print each phase's estimated peak memory and work (a warning where `run` would refuse them).

    The scenario's `plugins:` are imported (they are Python code), since the methods and task families they
    register are part of what is checked; the OK line names them.
    """
    study = _load_study(scenario, overrides, sweeps)
    loaded = study.scenario
    methods = ", ".join(method.key for method in loaded.methods)
    seeds = study.points[0].scenario.seed_list
    points = f"; {len(study.points)} sweep points over {', '.join(study.keys)}" if study.is_sweep else ""
    typer.echo(
        f"OK: scenario {loaded.name!r} ({loaded.source_path}): {len(loaded.tasks.sources)} source tasks, "
        f"{len(loaded.tasks.targets)} target tasks, methods {methods}; device {loaded.device.preset}, "
        f"costs {loaded.costs.preset}, seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}{points}"
        + (f"; imported plugins {', '.join(loaded.plugins)}" if loaded.plugins else "")
    )
    _check_budget(study, allow_large=True, show=True)


def _check_budget(study, allow_large: bool, show: bool = False) -> None:
    """Print the estimate of every phase (validate), refuse a study beyond the machine's memory or the work bound
    (run, unless `allow_large`), and warn about one that `allow_large` lets through."""
    from scenarios.budget import check_budget, estimate_lines
    from scenarios.errors import ScenarioError

    label = study.scenario.source_path.name if study.scenario.source_path else study.scenario.name
    if show:
        for line in estimate_lines(study):
            typer.echo(line)
    try:
        problems = check_budget(study, allow_large=allow_large)
    except ScenarioError as error:
        raise UserError(f"{label}: {error}") from None
    for problem in problems:
        typer.echo(f"crossbar-sim: warning: {label}: {problem} (`run` refuses it without --allow-large)", err=True)


@app.command(epilog=_BUNDLED_EPILOG)
def run(
    scenario: str = typer.Argument(..., help=_SCENARIO_HELP, show_default=False),
    out: Path | None = typer.Option(None, "--out", help="Run directory (default: runs/<scenario name>)."),
    overrides: list[str] = typer.Option([], "--set", help=_SET_HELP, metavar="KEY.PATH=VALUE"),
    sweeps: list[str] = typer.Option([], "--sweep", help=_SWEEP_HELP, metavar="KEY.PATH=V1,V2"),
    seed: int | None = typer.Option(None, "--seed", help="Seed of every random draw (same as --set seed=N)."),
    fresh: bool = typer.Option(False, "--fresh", help="Ignore checkpoints in the run directory and start over."),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Worker processes of the local Dask cluster (default: one per core)."
    ),
    scheduler: str | None = typer.Option(
        None,
        "--scheduler",
        metavar="ADDRESS",
        help="Run on an existing Dask cluster, e.g. tcp://host:8786 (default: $CROSSBAR_SIM_SCHEDULER, else local).",
    ),  # fmt: skip
    serial: bool = typer.Option(False, "--serial", help="Run everything in this process (debugging, profiling)."),
    cache: Path | None = typer.Option(
        None,
        "--cache",
        help="Folder of shared phases (base model, bank, programmed arrays) reused between runs "
        "(default: <run>/cache).",
    ),
    allow_version_change: bool = typer.Option(
        False, "--allow-version-change", help="Resume a run started by another crossbar-sim version or git commit."
    ),
    allow_large: bool = typer.Option(
        False,
        "--allow-large",
        help="Run even when the estimated memory exceeds what the machine has available, or "
        "the estimated work exceeds 24 h of a 2-core machine (see `crossbar-sim validate`).",
    ),
) -> None:
    """Validate a scenario, then run it: train, program, adapt, evaluate, and write results and figures."""
    study = _load_study(scenario, [*overrides, *([f"seed={seed}"] if seed is not None else [])], sweeps)
    _check_budget(study, allow_large)
    if serial and (scheduler or workers):
        raise UserError("--serial runs in this process: it cannot be combined with --scheduler or --workers")
    from scenarios.errors import ScenarioError
    from scenarios.execution import open_executor
    from scenarios.runner import run_study

    run_dir = out if out is not None else Path("runs") / study.scenario.name
    if cache is not None and cache.exists() and not cache.is_dir():
        raise UserError(f"--cache: {cache} is a file, expected a folder (or a path where one can be made)")
    try:
        executor = open_executor(serial=serial, scheduler=scheduler, workers=workers)
    except (ConnectionError, OSError, ValueError) as error:
        raise UserError(str(error).splitlines()[0] if str(error) else type(error).__name__) from None
    try:
        outcome = run_study(study, run_dir, fresh=fresh, executor=executor, cache_dir=cache,
                            allow_version_change=allow_version_change)  # fmt: skip
    except ScenarioError as error:
        raise UserError(str(error)) from None
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        typer.echo(f"crossbar-sim: failed: {_disk_full(error, run_dir)}", err=True)
        raise typer.Exit(EXIT_FAILED_UNITS) from None
    finally:
        executor.close()
    if outcome.failures:
        for line in outcome.failures:
            typer.echo(f"crossbar-sim: failed: {line}", err=True)
        typer.echo(
            f"crossbar-sim: {len(outcome.failures)} failure(s); partial results in {run_dir} "
            f"({len(outcome.finished)} of {len(study.points)} point(s) finished); finished units are kept: fix the "
            "cause and rerun the same command to resume", err=True,
        )  # fmt: skip
        raise typer.Exit(EXIT_FAILED_UNITS)
    typer.echo(outcome.summary or f"results in {run_dir}")


def _disk_full(error: OSError, run_dir: Path) -> str:
    """One line for a full disk (or quota): where, what is kept, how to go on."""
    where = error.filename or run_dir
    return (f"no space left on the device writing {where}; every unit finished before it is kept in "
            f"{run_dir / 'checkpoints'}: free some space and rerun the same command to resume")  # fmt: skip


@app.command()
def plot(
    run_dir: Path = typer.Argument(
        ..., help="A run directory holding metrics.csv (and ledger.csv).", show_default=False
    ),
) -> None:
    """Redraw the figures of a finished run from its metrics.csv and ledger.csv."""
    from scenarios.plots import ResultsError, plot_run

    if not (run_dir / "metrics.csv").is_file():
        raise UserError(f"{run_dir}: no metrics.csv there, expected a run directory written by `crossbar-sim run`")
    try:
        written = plot_run(run_dir)
    except ResultsError as error:
        raise UserError(str(error)) from None
    typer.echo(f"wrote {len(written)} figure files to {run_dir / 'figures'}")


EXIT_OK, EXIT_FAILED_UNITS, EXIT_USER_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
"""The exit codes, as the README promises them: success; a run that finished with failed units (partial results
kept), or an environment failure that left resumable work (a full disk); a user error; interrupted (Ctrl-C)."""


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app and exit with the code that says what happened (`EXIT_*`).

    typer runs with `standalone_mode=False`, so it *returns* the code of a `typer.Exit` (raised by a command, or
    made by typer itself from Ctrl-C: 130) instead of exiting; that return value is the exit code. typer may bundle
    its own copy of click, so click's exceptions are recognised by what they carry (`UsageError` has
    `format_message()` and exit code 2) rather than imported from click.
    """
    try:
        code = app(args=argv, prog_name="crossbar-sim", standalone_mode=False)
    except (KeyboardInterrupt, typer.Abort):
        code = EXIT_INTERRUPTED
    except UserError as error:
        typer.echo(f"crossbar-sim: error: {error}", err=True)
        code = EXIT_USER_ERROR
    except Exception as error:
        code = _click_error_code(error)
        if code is None:
            raise
    if code == EXIT_INTERRUPTED:
        typer.echo("crossbar-sim: aborted; resume with the same command", err=True)
    if isinstance(code, int) and code != EXIT_OK:
        sys.exit(code)  # success returns normally, so that in-process callers (tests) need not catch SystemExit


def _click_error_code(error: Exception) -> int | None:
    """The exit code of click's own errors (printed here as one line), None for anything else."""
    if type(error).__name__ == "NoArgsIsHelpError":
        typer.echo(str(error.ctx.get_help()) if getattr(error, "ctx", None) else str(error))
        return EXIT_OK
    if hasattr(error, "format_message") and getattr(error, "exit_code", None) == EXIT_USER_ERROR:
        typer.echo(f"crossbar-sim: error: {error.format_message()}", err=True)
        return EXIT_USER_ERROR
    return None


if __name__ == "__main__":
    main()
