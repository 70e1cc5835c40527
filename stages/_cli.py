"""Shared entry point: a FairquantError becomes one line on stderr and exit status 2, no traceback; Ctrl-C one line
and exit status 130.

Warnings that libraries raise while the stage runs (torch, torchao, dvclive, PIL) are held back: when the stage
fails, its one error line is all that stderr shows; when it succeeds, each distinct warning is shown once, after
the work, on one line."""

from __future__ import annotations

import logging
import os
import sys
import warnings

import typer

from fairquant.errors import FairquantError

QUIET_LOGGERS = ("dvclive", "torch", "torchao", "PIL")  # their log records below ERROR would add lines on stderr


def run(app: typer.Typer) -> None:
    os.environ.setdefault("TORCH_LOGS", "-all")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # each distinct warning once
        # torch.export and torchao emit deprecation chatter that buries the stage's own output.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        code = _run(app)
    if code == 0:
        for warning in caught:
            print(f"warning: {_first_line(warning.message)} ({warning.category.__name__})", file=sys.stderr)
    if code is not None:
        raise SystemExit(code)


def _first_line(message) -> str:
    return (str(message).strip().splitlines() or [""])[0]


def _run(app: typer.Typer) -> int | None:
    """The stage's exit status (None when it returned normally); a known failure already printed as one line."""
    try:
        app(standalone_mode=False)
    except FairquantError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: the stage stopped before finishing; no output was written", file=sys.stderr)
        return 130
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.exceptions.Abort):  # click's own Ctrl-C
            print("interrupted: the stage stopped before finishing; no output was written", file=sys.stderr)
            return 130
        if isinstance(exc, click.ClickException):
            print(f"error: {_first_line(exc.format_message())}", file=sys.stderr)
            return 2
        raise
    return None
