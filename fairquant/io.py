"""All file I/O between stages: atomic writes, parquet schemas, JSON, image stores and checkpoints.

Every writer goes to a temporary name in the destination folder and is moved into place with
``os.replace``, so a killed stage never leaves a half-written file for DVC to cache.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fairquant.errors import FairquantError

SAMPLES_FIXED_FIELDS = [
    pa.field("sample_id", pa.string(), nullable=False),
    pa.field("split", pa.string(), nullable=False),
    pa.field("y_true", pa.int8(), nullable=False),
    pa.field("row", pa.int64(), nullable=False),
]
PREDICTION_FIXED_FIELDS = [
    pa.field("sample_id", pa.string(), nullable=False),
    pa.field("y_true", pa.int8(), nullable=False),
    pa.field("y_score", pa.float32(), nullable=False),
    pa.field("y_pred", pa.int8(), nullable=False),
]


def samples_schema(protected: list[str]) -> pa.Schema:
    """The prepared table: one row per image, ``row`` indexing the uint8 image store."""
    return pa.schema(SAMPLES_FIXED_FIELDS + [pa.field(name, pa.string(), nullable=False) for name in protected])


def predictions_schema(protected: list[str]) -> pa.Schema:
    """Predictions of one variant on one split; protected attributes keep their own names."""
    return pa.schema(PREDICTION_FIXED_FIELDS + [pa.field(name, pa.string(), nullable=False) for name in protected])


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; replace ``path`` with it only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    return value


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically; NaN and inf become null (an undefined metric, not a crash)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_json_ready(data), indent=2, allow_nan=False) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FairquantError(f"{path}: file not found; run the stage that writes it first (dvc repro)")
    return json.loads(path.read_text())


def write_table(path: str | Path, frame: pd.DataFrame, schema: pa.Schema) -> None:
    """Write ``frame`` as parquet with exactly ``schema`` (extra columns must be in the schema)."""
    missing = [name for name in schema.names if name not in frame.columns]
    if missing:
        raise ValueError(f"table for {path} lacks columns {missing}")
    table = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FairquantError(f"{path}: file not found; run the stage that writes it first (dvc repro)")
    return pq.read_table(path).to_pandas()


def write_csv(path: str | Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")


def write_images(path: str | Path, images: np.ndarray) -> None:
    """The compact image store: one uint8 array (N, H, W, C), memory-mappable by later stages."""
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"image store must be uint8 (N, H, W, C), found {images.dtype} {images.shape}")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, images)


def read_images(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise FairquantError(f"{path}: image store not found; run the prepare stage first (dvc repro prepare)")
    return np.load(path, mmap_mode="r")


def code_revision() -> str:
    """The git commit of the code that produced an artifact, with '+dirty' for uncommitted changes."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "fairquant", "stages"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("+dirty" if dirty else "")


def save_checkpoint(path: str | Path, state_dict: dict, config: dict[str, Any]) -> None:
    """A self-describing checkpoint: weights, the config that built them, and the code revision."""
    payload = {"state_dict": state_dict, "config": config, "code_revision": code_revision()}
    with atomic_path(path) as tmp:
        import torch  # imported here: stages without models (evaluate, report) start 4 s faster

        torch.save(payload, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: artifacts from a shared remote are untrusted."""
    path = Path(path)
    if not path.is_file():
        raise FairquantError(f"{path}: checkpoint not found; run the stage that writes it first (dvc repro)")
    try:
        import torch

        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a corrupt or unsafe file
        raise FairquantError(f"{path}: not a loadable fairquant checkpoint ({type(exc).__name__}); re-run its stage") from None
    if not isinstance(payload, dict) or not {"state_dict", "config"} <= payload.keys():
        raise FairquantError(f"{path}: not a fairquant checkpoint (expected keys state_dict, config)")
    return payload
