"""One thin Typer command per DVC stage: load validated params, call the library, write outputs."""
