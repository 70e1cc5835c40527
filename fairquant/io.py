"""All file I/O between stages: atomic writes, parquet schemas, JSON, image stores and checkpoints.

Every writer goes to a temporary name in the destination folder and is moved into place with
``os.replace``, so a killed stage never leaves a half-written file for DVC to cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import mmap
import os
import re
import shutil
import sys
import tempfile
import time
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


PAIR_SCORES_SCHEMA = pa.schema([  # one verification variant's scores on the test pairs
    pa.field("pair_id", pa.string(), nullable=False),
    pa.field("fold", pa.int16(), nullable=False),
    pa.field("race", pa.string(), nullable=False),
    pa.field("genuine", pa.bool_(), nullable=False),
    pa.field("score", pa.float32(), nullable=False),  # cosine of the two embeddings (image + mirror, normalised)
])


def _labels_wide(fields: list[pa.Field], classes: list[str] | None) -> list[pa.Field]:
    """A multi-class target's labels are int16 (class indices); a binary one keeps int8 0/1."""
    if classes is None:
        return fields
    return [pa.field(f.name, pa.int16(), nullable=False) if f.name in ("y_true", "y_pred") else f for f in fields]


def samples_schema(protected: list[str], classes: list[str] | None = None) -> pa.Schema:
    """The prepared table: one row per image, ``row`` indexing the uint8 image store."""
    return pa.schema(_labels_wide(SAMPLES_FIXED_FIELDS, classes)
                     + [pa.field(name, pa.string(), nullable=False) for name in protected])


def predictions_schema(protected: list[str], classes: list[str] | None = None) -> pa.Schema:
    """Predictions of one variant on one split; protected attributes keep their own names. With a multi-class
    target, ``y_score`` is the predicted class's probability and ``y_prob`` every class's, in class order."""
    extra = [] if classes is None else [pa.field("y_prob", pa.list_(pa.float32()), nullable=False)]
    return pa.schema(_labels_wide(PREDICTION_FIXED_FIELDS, classes) + extra
                     + [pa.field(name, pa.string(), nullable=False) for name in protected])


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise FairquantError(f"cannot write {path}: a file stands where a folder of its path should be; remove it or "
                             "choose another path") from None


STALE_GRACE_S = 1.0  # a temporary younger than this may be one whose writer has not locked it yet


def _temporary_pattern(path: Path) -> re.Pattern:
    """The names :func:`tempfile.mkstemp` / ``mkdtemp`` give ``path``'s temporaries: ``.<name>.<8 chars>.tmp``."""
    return re.compile(rf"\.{re.escape(path.name)}\.[A-Za-z0-9_]{{8}}\.tmp")


def _lock(fd: int) -> bool:
    """Take an exclusive advisory lock on ``fd`` without waiting; False if another open file holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove the temporaries of ``path`` that a killed writer left beside it; return what was removed.

    Every writer holds an exclusive ``flock`` on its temporary (file or folder) while it writes, and the kernel
    drops the lock when the writer dies, however it dies (SIGKILL included). So a temporary that can be locked
    belongs to no live writer and is removed; one that cannot is another run's, writing the same output into
    the same folder at the same time, and is left alone. Only ``path``'s own temporaries are considered (the
    exact ``.<name>.<8 chars>.tmp`` names), and none younger than ``STALE_GRACE_S`` (a writer between creating
    its temporary and locking it)."""
    path = Path(path)
    pattern, removed = _temporary_pattern(path), []
    try:
        siblings = list(path.parent.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for candidate in siblings:
        if not pattern.fullmatch(candidate.name) or candidate.is_symlink():
            continue
        try:
            if time.time() - candidate.stat().st_mtime < STALE_GRACE_S:
                continue
            fd = os.open(candidate, os.O_RDONLY)
        except (FileNotFoundError, PermissionError):
            continue
        try:
            if not _lock(fd):
                continue
            if candidate.is_dir():
                shutil.rmtree(candidate, ignore_errors=True)
            else:
                candidate.unlink(missing_ok=True)
            removed.append(candidate)
        finally:
            os.close(fd)
    return removed


def _usual_mode(mode: int) -> int:
    """``mode`` under the process's umask: the permissions ``open`` / ``mkdir`` would give a new file or folder."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def writes_outputs() -> bool:
    """False in a ``torchrun`` worker other than rank 0: every rank runs the whole stage, rank 0 alone moves its
    outputs into place (the others' temporaries are discarded), so each file is written once."""
    torch = sys.modules.get("torch")  # not imported: no process group (and evaluate, report stay torch-free)
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return os.environ.get("RANK", "0") == "0" or int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    The temporary is locked while the block runs (see :func:`remove_stale_temporaries`, called first: a
    temporary left by a killed run is removed here, never shipped)."""
    path = Path(path)
    if path.is_dir():
        raise FairquantError(f"{path} is a folder; the output is a file: remove the folder or choose another path")
    _make_parent(path)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, _usual_mode(0o666))  # mkstemp's 0600 would ship an output only its writer can read
    try:
        _lock(fd)
        yield tmp_path
        if writes_outputs():
            os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
        os.close(fd)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; replace ``path`` with it only if the block succeeds.

    Locked and cleaned like :func:`atomic_path`'s temporary."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FairquantError(f"{path} is a file; the output is a folder: remove the file or choose another path")
    _make_parent(path)
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, _usual_mode(0o777))  # mkdtemp's 0700 would ship a folder only its writer can open
    fd = os.open(tmp, os.O_RDONLY)
    try:
        _lock(fd)
        yield tmp
        if writes_outputs():
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
        os.close(fd)


def check_outputs(*, folders: dict[str, Path | None] | None = None,
                  files: dict[str, Path | None] | None = None) -> None:
    """Refuse, before any work, an output the stage could not write at its end: a file where an output folder goes,
    a folder where an output file goes, or a file standing where a folder of its path should be. ``folders`` and
    ``files``: the command-line option -> the path it names (None when not given)."""
    for kind, outputs in (("folder", folders or {}), ("file", files or {})):
        for option, path in outputs.items():
            if path is None:
                continue
            path = Path(path)
            if kind == "folder" and path.exists() and not path.is_dir():
                raise FairquantError(f"{option} {path} is a file; the output is a folder: remove the file or choose "
                                     "another path")
            if kind == "file" and path.is_dir():
                raise FairquantError(f"{option} {path} is a folder; the output is a file: remove the folder or choose "
                                     "another path")
            blocking = next((parent for parent in path.parents if parent.exists()), None)
            if blocking is not None and not blocking.is_dir():
                raise FairquantError(f"{option} {path}: {blocking} is a file, where a folder of the path should be; "
                                     "remove it or choose another path")


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
    try:
        return json.loads(path.read_text())
    except RecursionError:  # nesting deeper than the parser recurses: no stage writes that
        raise FairquantError(f"{path}: not valid JSON (nested too deeply to read); the file is damaged: re-run the "
                             "stage that writes it (dvc repro -f -s <stage>)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FairquantError(f"{path}: not valid JSON ({exc}); the file is damaged: re-run the stage that writes it "
                             "(dvc repro -f -s <stage>)") from None


def require_object(value: Any, source: str | Path, fix: str) -> dict:
    """``value`` if it is a JSON object (a dict); otherwise the one-line refusal naming ``source`` and ``fix``."""
    if not isinstance(value, dict):
        raise FairquantError(f"{source}: expected a JSON object, found {type(value).__name__}; {fix}")
    return value


def read_json_object(path: str | Path, fix: str) -> dict:
    """:func:`read_json` of a file that must hold a JSON object."""
    return require_object(read_json(path), path, fix)


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
    try:
        return pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as exc:
        raise FairquantError(f"{path}: not a readable parquet table ({str(exc).splitlines()[0]}); the file is damaged: "
                             "re-run the stage that writes it (dvc repro -f -s <stage>)") from None


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


class ImageStoreWriter:
    """Appends rows to an image store file created by :func:`image_store_writer`.

    Rows go through the file (ordinary writes), never through a mapping: pages written through a mapping
    stay in the writing process's resident set, which would grow to the size of the whole store."""

    def __init__(self, handle, offset: int, capacity: int, image_shape: tuple[int, ...]) -> None:
        self._handle, self._offset, self.capacity, self.image_shape = handle, offset, capacity, image_shape
        self.rows = 0
        handle.seek(offset)

    def append(self, pixels: np.ndarray) -> None:
        """Write ``pixels`` (n, *image_shape) uint8 as the next n rows."""
        if pixels.dtype != np.uint8 or pixels.shape[1:] != self.image_shape:
            raise ValueError(f"rows must be uint8 (n, {', '.join(map(str, self.image_shape))}), "
                             f"found {pixels.dtype} {pixels.shape}")
        if len(pixels) == 0:  # a chunk whose files were all corrupt
            return
        if self.rows + len(pixels) > self.capacity:
            raise ValueError(f"image store holds {self.capacity} rows; cannot append {len(pixels)} after {self.rows}")
        self._handle.write(memoryview(np.ascontiguousarray(pixels)).cast("B"))
        self.rows += len(pixels)

    def _finish(self) -> None:
        """Shrink the store to the rows written: rewrite the header's row count in place and truncate.

        numpy pads every header so that the first dimension can grow to 21 digits in place, so the new header
        is exactly as long as the old one and the rows need not move."""
        handle = self._handle
        handle.flush()
        handle.seek(0)
        version = np.lib.format.read_magic(handle)
        handle.seek(0)
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                  "shape": (self.rows, *self.image_shape)}
        write_header = {(1, 0): np.lib.format.write_array_header_1_0,
                        (2, 0): np.lib.format.write_array_header_2_0}[version]
        write_header(handle, header)
        if handle.tell() != self._offset:
            raise RuntimeError(f"rewritten .npy header is {handle.tell()} bytes, expected {self._offset}")
        handle.truncate(self._offset + self.rows * int(np.prod(self.image_shape)))


@contextlib.contextmanager
def image_store_writer(path: str | Path, capacity: int, image_shape: tuple[int, ...]) -> Iterator[ImageStoreWriter]:
    """Create the image store at ``path`` for up to ``capacity`` uint8 images and append rows to it.

    The file is created with ``np.lib.format.open_memmap`` (header and size, nothing held in memory) under a
    temporary name; when the block ends it is shrunk to the rows appended and moved into place. If the block
    raises, nothing is left at ``path``."""
    image_shape = tuple(int(d) for d in image_shape)
    with atomic_path(path) as tmp:
        store = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(capacity, *image_shape))
        offset = store.offset
        del store
        with open(tmp, "r+b") as handle:
            writer = ImageStoreWriter(handle, offset, capacity, image_shape)
            yield writer
            writer._finish()


def read_images(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise FairquantError(f"{path}: image store not found; run the prepare stage first (dvc repro prepare)")
    try:
        images = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:  # a bad header, a truncated file, a pickled object array
        first = (str(exc).splitlines() or [""])[0][:120]
        raise FairquantError(f"{path}: not a readable image store ({type(exc).__name__}: {first}); the file is "
                             "damaged: re-run the stage that writes it (dvc repro -f -s <stage>)") from None
    if not isinstance(images, np.ndarray):  # an .npz archive
        raise FairquantError(f"{path}: not a readable image store (a {type(images).__name__}, not one array); re-run "
                             "the stage that writes it (dvc repro -f -s <stage>)")
    return images


def read_rows(images: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``images[rows]`` as a new array, reading the store in ascending row order (what a memory map reads fastest).

    Only the requested rows are read; the result is in the order of ``rows``. A read-only memory map is then
    unmapped from this process (see :func:`release_mapped_pages`), so reading a whole epoch batch by batch
    does not grow the resident set to the size of the store."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size < 2 or bool(np.all(rows[1:] >= rows[:-1])):
        out = np.asarray(images[rows])
    else:
        order = np.argsort(rows, kind="stable")
        out = np.empty((rows.size, *images.shape[1:]), dtype=images.dtype)
        out[order] = images[rows[order]]
    release_mapped_pages(images)
    return out


def release_mapped_pages(images: np.ndarray) -> None:
    """Drop the pages of a read-only memory-mapped store from this process's resident set.

    Pages read through a mapping stay mapped, and the kernel maps whole large page-cache folios at a time, so
    random batches soon make the resident set as large as the store. The pages stay in the page cache; the
    next read maps them again. Only read-only maps (``mmap_mode="r"``) are released: for a copy-on-write map
    this would discard changes. Anything else is left alone."""
    owner = images
    while isinstance(owner, np.ndarray) and not isinstance(owner.base, mmap.mmap):
        owner = owner.base
    if isinstance(owner, np.memmap) and owner.mode == "r" and hasattr(mmap, "MADV_DONTNEED"):
        owner.base.madvise(mmap.MADV_DONTNEED)


class ImageRows:
    """A read-only view of the rows ``rows`` of an image store, read batch by batch on demand.

    Stands in for ``images[rows]`` where code only takes ``len()``, ``.shape`` and slices (batch loops), so
    a split is never copied out of the memory map as a whole."""

    def __init__(self, images: np.ndarray, rows: np.ndarray) -> None:
        self.images, self.rows = images, np.asarray(rows, dtype=np.int64)
        self.shape = (self.rows.size, *images.shape[1:])
        self.dtype = images.dtype

    def __len__(self) -> int:
        return self.rows.size

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return np.asarray(self.images[self.rows[index]])
        return read_rows(self.images, self.rows[index])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        pixels = read_rows(self.images, self.rows)
        return pixels if dtype is None else pixels.astype(dtype, copy=False)


def code_revision() -> str:
    """A hash of the project modules this process has imported (the code the stage ran), stamped into every
    checkpoint.

    Not the git commit, nor every file: identical code must give identical bytes, so that a re-run after an
    unrelated commit or edit (or after a killed stage) reproduces the same checkpoint and DVC re-runs nothing
    downstream."""
    import sys

    root = Path(__file__).resolve().parents[1]
    files = set()
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if name.split(".")[0] in ("fairquant", "stages") and path and Path(path).suffix == ".py":
            files.add(Path(path).resolve())
    digest = hashlib.sha256()
    for path in sorted(files):
        name = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return "sha256:" + digest.hexdigest()[:16]


def save_checkpoint(path: str | Path, state_dict: dict, config: dict[str, Any]) -> None:
    """A self-describing checkpoint: weights, the config that built them, and a hash of the code that ran."""
    payload = {"state_dict": state_dict, "config": config, "code_revision": code_revision()}
    import io

    import torch  # imported here: stages without models (evaluate, report) start 4 s faster

    # Through a buffer, not the temporary file's path: torch names the archive's records after the file it
    # writes to, and a random temporary name would make identical checkpoints differ byte for byte.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def torch_load_problem(exc: Exception) -> str:
    """Why ``torch.load(..., weights_only=True)`` refused a file, in words. torch's own message advises
    ``weights_only=False``: never for a file from a shared remote or of unknown origin, so it is not shown."""
    # torch words it "Unsupported global: GLOBAL os.system ..." or "unsupported GLOBAL posix.system whose module
    # posix is blocked" (a payload pickled by hand), depending on what the pickle names
    if "unsupported global" in str(exc).lower():
        return f"{type(exc).__name__}: it holds objects other than tensors, refused unread; only tensors are loaded, " \
               "never code (it holds a pickled global, not plain weights)"
    if not str(exc).strip():  # what an empty file raises
        return f"{type(exc).__name__}: empty file"
    return f"{type(exc).__name__}: damaged or not a torch file"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: artifacts from a shared remote are untrusted."""
    path = Path(path)
    if not path.is_file():
        raise FairquantError(f"{path}: checkpoint not found; run the stage that writes it first (dvc repro)")
    try:
        import torch

        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a corrupt or unsafe file
        raise FairquantError(f"{path}: not a loadable fairquant checkpoint ({torch_load_problem(exc)}); re-run its "
                             "stage (dvc repro -f -s <stage>)") from None
    if not isinstance(payload, dict) or not {"state_dict", "config"} <= payload.keys():
        raise FairquantError(f"{path}: not a fairquant checkpoint (expected keys state_dict, config); point at a model "
                             "folder a fairquant stage wrote, or re-run its stage")
    config = payload["config"]
    if not isinstance(config, dict) or not isinstance(config.get("kind"), str) or not isinstance(
            payload["state_dict"], dict):
        raise FairquantError(f"{path}: a damaged fairquant checkpoint (its config has no kind, or its state_dict is "
                             "not a mapping); re-run its stage (dvc repro -f -s <stage>)")
    return payload
