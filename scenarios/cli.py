"""The `crossbar-sim` command line (typer).

User errors (bad arguments, bad scenario files) print one line on stderr and exit 2; nothing else does.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version

import typer

from energy import COST_PRESETS, DEFAULT_COST_PRESET

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


def package_version() -> str:
    try:
        return version("crossbar-sim")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "0+unknown"


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
    try:
        from crossbar.presets import device_preset_rows
    except ImportError:  # the device model is not installed yet in this checkout
        return []
    return device_preset_rows()


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
