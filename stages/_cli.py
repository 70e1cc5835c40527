"""Shared entry point: a FairquantError becomes one line on stderr and exit status 2, no traceback; Ctrl-C one line
and exit status 130.

Warnings that libraries raise while the stage runs (torch, torchao, dvclive, PIL) are held back: when the stage
fails, its one error line is all that stderr shows; when it succeeds, each distinct warning is shown once, after
the work, on one line."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import warnings

import typer

from fairquant.errors import FairquantError
from fairquant.io import writes_outputs
from stages import INTERRUPTED

DISTRIBUTED_STAGES = frozenset({"finetune", "quantize_qat", "quantize_kmeans", "prune", "mitigate", "verify_train",
                                "verify_compress"})  # may run under torchrun
QUIET_LOGGERS = ("dvclive", "torch", "torchao", "PIL")  # their log records below ERROR would add lines on stderr


def run(app: typer.Typer) -> None:
    if threading.current_thread() is threading.main_thread():  # stages/__init__'s import-time handler ends here
        signal.signal(signal.SIGINT, signal.default_int_handler)
    os.environ.setdefault("TORCH_LOGS", "-all")
    stage = _stage_name(app)
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1 and stage not in DISTRIBUTED_STAGES:  # its ranks would each run it whole, or write nothing
        print(f"error: {stage} runs on one process, but WORLD_SIZE is {world} (torchrun, SLURM or a job launcher set "
              f"it); run it without the launcher (only {', '.join(sorted(DISTRIBUTED_STAGES))} train on several)",
              file=sys.stderr)
        sys.exit(2)
    if not writes_outputs():  # a torchrun rank other than 0: rank 0 says what the stage did, once
        sys.stdout = open(os.devnull, "w")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # each distinct warning once
        # torch.export and torchao emit deprecation chatter that buries the stage's own output.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        code = _run(app)
    if code is None:  # the stage succeeded: what the libraries warned about, one line each
        for warning in caught:
            print(f"warning: {_first_line(warning.message)} ({warning.category.__name__})", file=sys.stderr)
    if os.environ.get(STAGE_REPORT):
        _report_device()
    if code is not None:
        raise SystemExit(code)


STAGE_REPORT = "FAIRQUANT_STAGE_REPORT"  # set: one last stderr line naming the device used (benchmarks/scale.py)


def _report_device() -> None:
    """``fairquant-stage: device=cuda gpu_peak_bytes=N`` when the stage touched CUDA, else ``device=cpu``."""
    torch = sys.modules.get("torch")  # a stage that never imported torch ran on the CPU
    if torch is not None and torch.cuda.is_initialized():
        print(f"fairquant-stage: device=cuda gpu_peak_bytes={torch.cuda.max_memory_allocated()}", file=sys.stderr)
    else:
        print("fairquant-stage: device=cpu gpu_peak_bytes=0", file=sys.stderr)


def _first_line(message) -> str:
    return (str(message).strip().splitlines() or [""])[0]




def _is(exc: BaseException, name: str) -> bool:
    """``exc`` is click's ``name`` exception, whichever click raised it (typer vendors its own copy of click)."""
    return any(cls.__name__ == name and "click" in cls.__module__ for cls in type(exc).__mro__)


def _stage_name(app: typer.Typer) -> str:
    """The stage a typer app is the command of (stages.<name>)."""
    command = app.registered_commands[0].callback if app.registered_commands else None
    module = getattr(command, "__module__", "") or ""
    if module == "__main__":  # python -m stages.<name> (and torchrun -m): the name is the main module's spec
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        module = spec.name if spec is not None else ""
    return module.rsplit(".", 1)[-1] or "this stage"


def _run(app: typer.Typer) -> int | None:
    """The stage's exit status (None when it returned normally); a known failure already printed as one line.

    typer turns Ctrl-C into exit status 130 (returned, in non-standalone mode) once every ``with`` block of the
    stage has unwound, so the temporary outputs are gone by then."""
    try:
        code = app(standalone_mode=False)
    except FairquantError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except typer.Exit as exc:
        code = exc.exit_code
    except KeyboardInterrupt:  # raised outside the command (typer's own handling did not run)
        code = 130
    except Exception as exc:
        if _is(exc, "Abort"):  # click's Ctrl-C or end of input
            code = 130
        elif _is(exc, "ClickException"):  # a usage error: unknown or missing option, bad value
            print(f"error: {_first_line(exc.format_message())}", file=sys.stderr)
            return 2
        else:
            raise
    if code == 130:
        print(INTERRUPTED, file=sys.stderr)
    return code or None
