"""One thin Typer command per DVC stage: load validated params, call the library, write outputs.

Run as ``python -m stages.<name>``, a stage spends its first seconds importing torch; Ctrl-C then would end in
an import traceback. Until stages._cli.run takes over (and restores Python's KeyboardInterrupt, so every ``with``
block unwinds and removes its temporaries), Ctrl-C prints the stage's one line and exits 130: nothing has been
written yet."""

import os
import signal
import sys

INTERRUPTED = "interrupted: the stage stopped before finishing; no output was written"


def _interrupted_while_importing(signum, frame) -> None:
    print(INTERRUPTED, file=sys.stderr, flush=True)
    os._exit(130)


if sys.argv[:1] == ["-m"]:  # python -m stages.<name> is locating its module: a stage is starting, not a test
    signal.signal(signal.SIGINT, _interrupted_while_importing)
