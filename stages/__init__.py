"""One thin Typer command per DVC stage: load validated params, call the library, write outputs."""

import os

# Before a stage module imports torch (torchao logs a deprecation warning on import): a refused input is one line on
# stderr. stages/_cli.run sets the same, but only after the stage module's imports have run.
os.environ.setdefault("TORCH_LOGS", "-all")
