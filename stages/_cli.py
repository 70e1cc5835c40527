"""Shared entry point: a FairquantError becomes one line on stderr and exit status 2, no traceback."""

from __future__ import annotations

import os
import sys
import warnings

import typer

from fairquant.errors import FairquantError


def run(app: typer.Typer) -> None:
    # torch.export and torchao emit deprecation chatter that buries the stage's own output.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.setdefault("TORCH_LOGS", "-all")
    try:
        app(standalone_mode=False)
    except FairquantError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            print(f"error: {exc.format_message()}", file=sys.stderr)
            raise SystemExit(2) from None
        raise
