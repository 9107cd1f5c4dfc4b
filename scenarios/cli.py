"""The `crossbar-sim` command line (typer).

User errors (bad arguments, bad scenario files) print one line on stderr and exit 2; nothing else does.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from energy import COST_PRESETS, DEFAULT_COST_PRESET
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


_SCENARIO_HELP = "Scenario YAML file, or the name of a bundled scenario (multitask, tiny)."
_SET_HELP = "Override a setting before validation, e.g. --set bank.rank=8 (value parsed as YAML); repeatable."


def _load(scenario: str, overrides: list[str]):
    """Load and validate a scenario; any problem in it becomes a one-line UserError."""
    from scenarios.loading import ScenarioError, load_scenario

    try:
        return load_scenario(scenario, overrides)
    except ScenarioError as error:
        raise UserError(str(error)) from None


@app.command()
def validate(
    scenario: str = typer.Argument(..., help=_SCENARIO_HELP, show_default=False),
    overrides: list[str] = typer.Option([], "--set", help=_SET_HELP, metavar="KEY.PATH=VALUE"),
) -> None:
    """Check a scenario file (schema, presets, task names, npz files) without running it."""
    loaded = _load(scenario, overrides)
    methods = ", ".join(method.key for method in loaded.methods)
    typer.echo(
        f"OK: scenario {loaded.name!r} ({loaded.source_path}): {len(loaded.tasks.sources)} source tasks, "
        f"{len(loaded.tasks.targets)} target tasks, methods {methods}; device {loaded.device.preset}, "
        f"costs {loaded.costs.preset}, seed {loaded.seed}"
    )


@app.command()
def run(
    scenario: str = typer.Argument(..., help=_SCENARIO_HELP, show_default=False),
    out: Path | None = typer.Option(None, "--out", help="Run directory (default: runs/<scenario name>)."),
    overrides: list[str] = typer.Option([], "--set", help=_SET_HELP, metavar="KEY.PATH=VALUE"),
    seed: int | None = typer.Option(None, "--seed", help="Seed of every random draw (same as --set seed=N)."),
    fresh: bool = typer.Option(False, "--fresh", help="Ignore checkpoints in the run directory and start over."),
) -> None:
    """Validate a scenario, then run it: train, program, adapt, evaluate, and write results and figures."""
    loaded = _load(scenario, [*overrides, *([f"seed={seed}"] if seed is not None else [])])
    from scenarios.errors import ScenarioError
    from scenarios.runner import run_scenario

    try:
        run_dir = run_scenario(loaded, out if out is not None else Path("runs") / loaded.name, fresh=fresh)
    except ScenarioError as error:
        raise UserError(str(error)) from None
    typer.echo(f"results in {run_dir}")


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


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app and turn user errors into one line and exit code 2.

    typer may bundle its own copy of click, so its exceptions are recognised by what they carry (click's
    `UsageError` has `format_message()` and exit code 2) rather than imported from click.
    """
    try:
        app(args=argv, prog_name="crossbar-sim", standalone_mode=False)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        typer.echo("crossbar-sim: aborted", err=True)
        sys.exit(130)
    except UserError as error:
        typer.echo(f"crossbar-sim: error: {error}", err=True)
        sys.exit(2)
    except Exception as error:
        if type(error).__name__ == "NoArgsIsHelpError":
            typer.echo(str(error.ctx.get_help()) if getattr(error, "ctx", None) else str(error))
            sys.exit(0)
        if hasattr(error, "format_message") and getattr(error, "exit_code", None) == 2:
            typer.echo(f"crossbar-sim: error: {error.format_message()}", err=True)
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
