"""Paths a dataset names stay inside its root: every reader, classification and verification alike, refuses a
name that leaves the root (an absolute path, a ``..`` part) and a file or folder that resolves outside it (a
symlink that leads out). One helper, one message, wherever the path comes from (a label table, a pairs file, a
folder listing)."""

from __future__ import annotations

import os
from pathlib import Path

from fairquant.errors import FairquantError
from fairquant.params.data import escapes  # defined with the params, which check data.folder.table by it too

__all__ = ["COPY_IN", "escapes", "named_path", "real_root", "require_inside"]

COPY_IN = "copy the files into the dataset root instead of linking them"


def real_root(root: str | Path) -> Path:
    """The dataset root with its own symlinks resolved (a root may itself be a link to another disk)."""
    return Path(os.path.realpath(root))


def require_inside(base: Path, path: str | Path, where: str, label: str | None = None) -> Path:
    """``path`` resolved, refused when it leads outside ``base`` (a resolved root, see :func:`real_root`);
    ``label`` says what the path is in the message (the path itself by default)."""
    resolved = Path(os.path.realpath(path))
    if not resolved.is_relative_to(base):
        raise FairquantError(f"{where}: {label or path} resolves outside the dataset root {base} (to {resolved}: a "
                             f"symlink leads out of it); {COPY_IN}")
    return resolved


def named_path(base: Path, text: str, where: str, *, relative_to: Path | None = None, key: str = "data.root"
               ) -> Path:
    """The file a dataset's own list names by ``text`` (relative to ``relative_to``, the root by default), resolved
    inside the resolved root ``base``; a control character, an absolute path, a '..' part or a symlink out refused."""
    if any(ord(char) < 32 for char in text):
        raise FairquantError(f"{where}: file {text!r} holds a control character; give a plain path relative to {key}")
    if escapes(text):
        raise FairquantError(f"{where}: file {text!r} leaves the dataset root; give a path relative to {key}")
    return require_inside(base, (relative_to or base) / text, where, f"file {text!r}")
