"""Memory and speed of prepare and training on a CelebA-size dataset (202,599 JPEGs in CelebA's layout).

    python benchmarks/memory.py                    # full size; generation takes several minutes
    python benchmarks/memory.py --images 20000     # smaller
    python benchmarks/memory.py --keep             # keep (and next time reuse) the generated folder

The files are SYNTHETIC: a pool of distinct faces from fairquant's renderer, cropped to CelebA's 178x218 and
JPEG-encoded once, then written out file by file, so that decoding costs what it costs per file.

Each phase runs in a fresh Python process, so nothing of the generator or of another phase is counted:
- prepare: the real path (CelebA loader, then the store built straight into its output folder), 64 px,
  2 decoding workers;
- training: ResNet-18 with the small-input stem at 64 px through ``fit_logged`` (the finetune stage's path),
  reading batches from the full memory-mapped store, capped at ``--steps`` steps with the validation pass on
  ``--val`` rows (in the trainer's batches of 512); the same steps with only ``steps x 128`` training rows as a
  baseline (what the model itself costs); and a full epoch of batch reads (every training row, the trainer's
  order) without the model.

Memory is sampled every 50 ms with psutil over the phase's process and all its descendants (the decoding
workers), summing resident set sizes (RSS; pages shared between processes counted once per process, an
upper bound: forked workers share the parent's pages), proportional set sizes (PSS; shared pages split between
sharers) and anonymous memory (RSS less file-backed and shared pages: the heap, what cannot be dropped and
re-read). File-backed pages are those of
the image store mapped by the reader (clean page cache that the kernel may drop). ``ru_maxrss`` of the phase
process and of its largest child is printed too.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CELEBA_IMAGES = 202_599
CELEBA_SPLITS = (162_770, 19_867, 19_962)  # train, val, test in list_eval_partition.txt
CELEBA_WIDTH, CELEBA_HEIGHT = 178, 218
IMAGE_SIZE, WORKERS = 64, 2
GIB = 2**30


def line(name: str, value: str, target: str = "") -> None:
    print(f"{name}: {value}" + (f" ({target})" if target else ""), flush=True)


# --- the dataset ------------------------------------------------------------------------------------------

def _render_pool(folder: Path, pool: int) -> tuple[list[bytes], list[str]]:
    """``pool`` distinct generated faces as CelebA-shaped JPEG bytes, with their attribute rows (as text)."""
    from PIL import Image

    from fairquant.data.synthetic import generate_celeba_like
    from fairquant.params import GenerateParams

    generate_celeba_like(GenerateParams(identities=pool // 4, images_per_identity=4, render_size=CELEBA_HEIGHT,
                                        workers=WORKERS, rare_cue_share=0.5), folder)
    rows = (folder / "list_attr_celeba.txt").read_text().splitlines()[2:]
    left = (CELEBA_HEIGHT - CELEBA_WIDTH) // 2
    encoded = []
    for name in sorted(p.name for p in (folder / "img_align_celeba").iterdir()):
        with Image.open(folder / "img_align_celeba" / name) as image:
            face = image.convert("RGB").crop((left, 0, left + CELEBA_WIDTH, CELEBA_HEIGHT))
        buffer = io.BytesIO()
        face.save(buffer, format="JPEG", quality=90)
        encoded.append(buffer.getvalue())
    return encoded, [row.split(maxsplit=1)[1] for row in rows]


def _write_files(args: tuple[str, list[bytes], int, int]) -> None:
    folder, pool, first, last = args
    for j in range(first, last):
        with open(os.path.join(folder, f"{j + 1:06d}.jpg"), "wb") as handle:
            handle.write(pool[j % len(pool)])


def generate(root: Path, images: int, pool: int) -> None:
    """CelebA's layout at ``root``: img_align_celeba/NNNNNN.jpg, list_attr_celeba.txt, list_eval_partition.txt."""
    if (root / "complete").is_file() and int((root / "complete").read_text()) == images:
        print(f"reusing {root} ({images} images)", flush=True)
        return
    shutil.rmtree(root, ignore_errors=True)
    folder = root / "img_align_celeba"
    folder.mkdir(parents=True)
    start = time.perf_counter()
    encoded, attributes = _render_pool(root / "pool", min(pool, images))
    bounds = np.linspace(0, images, WORKERS + 1).astype(int)
    with ProcessPoolExecutor(WORKERS) as workers:
        list(workers.map(_write_files, [(str(folder), encoded, a, b) for a, b in zip(bounds, bounds[1:])]))
    names = [f"{j + 1:06d}.jpg" for j in range(images)]
    header = (root / "pool" / "list_attr_celeba.txt").read_text().splitlines()[1]
    rows = "".join(f"{name} {attributes[j % len(attributes)]}\n" for j, name in enumerate(names))
    (root / "list_attr_celeba.txt").write_text(f"{images}\n{header}\n{rows}")
    # CelebA's partition is contiguous: train, then val, then test; the same proportions at any size
    n_train = round(images * CELEBA_SPLITS[0] / CELEBA_IMAGES)
    n_val = round(images * CELEBA_SPLITS[1] / CELEBA_IMAGES)
    parts = np.repeat([0, 1, 2], [n_train, n_val, images - n_train - n_val])
    (root / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in zip(names, parts)))
    shutil.rmtree(root / "pool")
    (root / "complete").write_text(str(images))
    size = sum(f.stat().st_size for f in folder.iterdir())
    print(f"generated {images} JPEGs ({size / images / 1024:.1f} KiB each, {len(encoded)} distinct) in "
          f"{time.perf_counter() - start:.0f} s", flush=True)


# --- measuring a phase in its own process -------------------------------------------------------------------

def _tree_memory(process) -> tuple[int, int, int]:
    """(RSS, PSS, anonymous) summed over ``process`` and its descendants, in bytes."""
    import psutil

    rss = pss = anon = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            info = member.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss, pss, anon = rss + info.rss, pss + info.pss, anon + info.rss - info.shared
    return rss, pss, anon


def run_phase(args: list[str]) -> dict:
    """Run this script's ``--phase`` in a child process; return its JSON result and the memory samples."""
    import psutil

    child = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    process = psutil.Process(child.pid)
    samples: list[tuple[float, int, int, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                samples.append((time.time(), *_tree_memory(process)))
            except psutil.NoSuchProcess:
                return
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = child.stdout.read()
    child.wait()
    done.set()
    sampler.join()
    if child.returncode:
        raise SystemExit(f"phase {args[1]} failed (exit {child.returncode})")
    return {**json.loads(output.strip().splitlines()[-1]), "samples": samples}


def peaks(samples: list, after: float = 0.0, before: float = float("inf")) -> dict:
    window = [s for s in samples if after <= s[0] < before] or [(0, 0, 0, 0)]
    return {name: max(s[k] for s in window) for k, name in ((1, "rss"), (2, "pss"), (3, "anon"))}


def _usage() -> dict:
    """ru_maxrss (KiB on Linux) and CPU seconds of this process and of its waited-for children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"maxrss_self": own.ru_maxrss * 1024, "maxrss_largest_child": children.ru_maxrss * 1024,
            "cpu_s": own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime}


def phase_prepare(root: Path, prepared: Path) -> dict:
    """The prepare stage's path: load the CelebA layout, build the store straight into its folder."""
    from fairquant.data.loaders import load_dataset
    from fairquant.data.prepare import build_image_store, check_splits
    from fairquant.io import atomic_dir, samples_schema, write_json, write_table
    from fairquant.params import DataParams

    start = time.perf_counter()
    raw = load_dataset(DataParams(source="celeba", root=str(root), target="Smiling", protected=["Male"],
                                  max_corrupt_fraction=0.01))
    loaded, loaded_at = time.perf_counter(), time.time()
    with atomic_dir(prepared) as tmp:
        table, images, _ = build_image_store(raw, IMAGE_SIZE, WORKERS, 0.01, out=tmp / "images.npy")
        check_splits(table, ["Male"])
        write_table(tmp / "samples.parquet", table, samples_schema(["Male"]))
        write_json(tmp / "info.json", {"synthetic": True, "image_size": IMAGE_SIZE, "samples": len(table)})
    end = time.perf_counter()
    return {"images": len(table), "load_s": loaded - start, "build_s": end - loaded, "total_s": end - start,
            "loaded_at": loaded_at, "load_average": os.getloadavg()[0], **_usage()}


def phase_train(prepared: Path, steps: int, val: int, limit: int | None, live: Path) -> dict:
    """``fit_logged`` on the full store for ``steps`` steps of 128, validating on ``val`` rows; ``limit``
    keeps only that many training rows (the baseline: the same work on a small dataset)."""
    import torch

    from fairquant.data.prepare import load_prepared
    from fairquant.models import build_model
    from fairquant.params import TrainingParams
    from fairquant.training import fit_logged, seed_everything

    table, images, _ = load_prepared(prepared)
    train = table[table["split"] == "train"].iloc[:limit]
    kept_val = table[table["split"] == "val"].iloc[:val]
    table = table[table.index.isin(train.index) | table.index.isin(kept_val.index)]
    seed_everything(0)
    model = build_model("resnet18", small_input_stem=True)
    batch_size = 128
    params = TrainingParams(epochs=steps / -(-len(train) // batch_size), batch_size=batch_size, device="cpu", seed=0)
    start = time.perf_counter()
    fit_logged(model, table, images, ["Male"], params, live, "memory benchmark", seed=0, section="finetune")
    return {"store_rows": len(images), "train_rows": len(train), "steps": steps, "val_rows": len(kept_val),
            "seconds": time.perf_counter() - start, "threads": torch.get_num_threads(),
            "load_average": os.getloadavg()[0], **_usage()}


def phase_read_epoch(prepared: Path) -> dict:
    """Every training batch of one epoch read from the store in the trainer's order, without a model."""
    import torch

    from fairquant.data.prepare import load_prepared
    from fairquant.io import read_rows

    table, images, _ = load_prepared(prepared)
    rows = table.loc[table["split"] == "train", "row"].to_numpy()
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0)).numpy()
    start = time.perf_counter()
    checksum = 0
    for first in range(0, len(order), 128):
        checksum += int(read_rows(images, rows[np.sort(order[first:first + 128])])[:, 0, 0, 0].sum())
    return {"train_rows": len(rows), "seconds": time.perf_counter() - start, "checksum": checksum, **_usage()}


# --- the report ---------------------------------------------------------------------------------------------

def gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def memory(peak: dict) -> str:
    return f"PSS {gib(peak['pss'])}, anonymous {gib(peak['anon'])}"


def report_prepare(prep: dict, store: Path) -> None:
    line("store", f"{prep['images']} images, {gib(store.stat().st_size)} at {IMAGE_SIZE} px")
    line("prepare images/s", f"{prep['images'] / prep['total_s']:.0f}",
         f"target >= 1500 on 2 cores; loader {prep['load_s']:.1f} s + decode and write {prep['build_s']:.1f} s; "
         f"decode alone {prep['images'] / prep['build_s']:.0f}/s; load average {prep['load_average']:.1f} from "
         f"other jobs too")
    line("prepare CPU per image", f"{prep['cpu_s'] / prep['images'] * 1e3:.2f} ms",
         f"all processes; 2 idle cores could do about {2 * prep['images'] / prep['cpu_s']:.0f} images/s")
    whole, decoding = peaks(prep["samples"]), peaks(prep["samples"], after=prep["loaded_at"])
    line("prepare peak RSS, process tree", gib(whole["rss"]),
         f"target < 2 GiB; {memory(whole)}; ru_maxrss main {gib(prep['maxrss_self'])}, largest worker "
         f"{gib(prep['maxrss_largest_child'])}")
    line("prepare peak RSS while decoding (after the loader)", gib(decoding["rss"]), memory(decoding))


def report_train(name: str, train: dict) -> None:
    peak = peaks(train["samples"])
    line(name, gib(peak["rss"]),
         f"target < 2 GiB; {memory(peak)}; ru_maxrss {gib(train['maxrss_self'])}; {train['steps']} steps of 128 "
         f"from {train['train_rows']} training rows of the {train['store_rows']}-row memmap, then "
         f"{train['val_rows']} val rows in batches of 512; {train['seconds']:.0f} s on {train['threads']} threads, "
         f"load average {train['load_average']:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=CELEBA_IMAGES, help="JPEGs to generate (default: CelebA's count)")
    parser.add_argument("--keep", action="store_true", help="keep the generated folder, and reuse it if present")
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "fairquant-memory-benchmark",
                        help="where to generate (default: a folder in the system temp directory)")
    parser.add_argument("--pool", type=int, default=4000, help="distinct images rendered")
    parser.add_argument("--steps", type=int, default=10, help="training steps of batch 128 (an epoch is capped)")
    parser.add_argument("--val", type=int, default=1024, help="validation rows predicted after the capped epoch")
    parser.add_argument("--phase", choices=["prepare", "train", "read-epoch"], help=argparse.SUPPRESS)
    parser.add_argument("--prepared", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase:  # inside a measured child process: one JSON line on stdout
        if args.phase == "prepare":
            result = phase_prepare(args.folder / "celeba", args.prepared)
        elif args.phase == "train":
            result = phase_train(args.prepared, args.steps, args.val, args.limit, args.folder / "live")
        else:
            result = phase_read_epoch(args.prepared)
        print(json.dumps(result))
        return

    celeba, prepared = args.folder / "celeba", args.folder / "prepared"
    print(f"machine: {os.cpu_count()} cores; {args.images} images at {IMAGE_SIZE} px, {WORKERS} workers", flush=True)
    try:
        generate(celeba, args.images, args.pool)
        common = ["--folder", str(args.folder), "--prepared", str(prepared)]
        os.sync()
        report_prepare(run_phase(["--phase", "prepare", *common]), prepared / "images.npy")
        training = ["--phase", "train", *common, "--steps", str(args.steps), "--val", str(args.val)]
        report_train("training peak RSS", run_phase(training))
        report_train("  same steps on a small dataset (baseline)",
                     run_phase([*training, "--limit", str(args.steps * 128)]))
        read = run_phase(["--phase", "read-epoch", *common])
        peak = peaks(read["samples"])
        line("full epoch of batch reads (no model) peak RSS", gib(peak["rss"]),
             f"{memory(peak)}; {read['train_rows']} rows in {read['seconds']:.1f} s, "
             f"{read['train_rows'] / read['seconds']:.0f} images/s")
    finally:
        shutil.rmtree(prepared, ignore_errors=True)
        shutil.rmtree(args.folder / "live", ignore_errors=True)
        if not args.keep:
            shutil.rmtree(args.folder, ignore_errors=True)


if __name__ == "__main__":
    main()
