"""The study at scale: the whole default graph (`dvc repro`) on a CelebA-size generated set and an RFW-size
verification test set, with each stage's wall time, the device it used and its peak memory.

    python benchmarks/scale.py --fraction 0.01 --workdir /tmp/scale    # a 1% study: about 25 min on 2 CPU cores
    python benchmarks/scale.py                                         # full size: on a GPU box (hours on a CPU)

Sizes at ``--fraction 1``: the classification branch's generated faces are 202,599 images at 64 px (CelebA's
count: 10,130 identities x 20 images, rendered and prepared at 64 px, CelebA's 80/10/10 split), the verification
branch's test set is RFW's: 6,000 pairs per race (10 folds x 300 genuine + 300 impostor pairs) from 3,000
identities x 4 images per race. ``--fraction F`` scales the identity counts and the pairs per fold by F; everything
else is the shipped params.yaml (calibration.size lowered at small fractions, 4 epochs, the default remedies, the
sweep, ``evaluate.device: auto`` and every training section's ``device: auto``, so a CUDA machine trains and
scores on its GPU).

The study runs in a fresh git repository under ``--workdir`` (tests/study.py builds it, as for the end-to-end
tests); the stages run with ``FAIRQUANT_STAGE_REPORT=1``, so each prints, as its last stderr line, whether it
touched CUDA and ``torch.cuda.max_memory_allocated()`` when it did. Host memory is sampled every 0.2 s with psutil
over every process DVC started (DVC's own process excluded), summing resident set sizes (RSS; pages shared between
a stage and its forked workers are counted once per process: an upper bound); the peak is attributed to the stage
DVC last announced. Latency is measured on the CPU on ``latency.batch`` noise images, whatever the test set's size.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.study import study_repo  # noqa: E402  (the shrunken study's repository builder)

CELEBA_IMAGES, IMAGES_PER_IDENTITY, IMAGE_SIZE = 202_599, 20, 64
RFW_PAIRS_PER_FOLD, RFW_IDENTITIES, RFW_IMAGES_PER_IDENTITY = 300, 3_000, 4  # 6,000 pairs per race
MIB = 2**20


def scaled_params(fraction: float) -> dict:
    """The shipped params.yaml at ``fraction`` of CelebA / RFW size."""
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    identities = max(10, round(CELEBA_IMAGES * fraction / IMAGES_PER_IDENTITY))
    params["generate"].update({"identities": identities, "images_per_identity": IMAGES_PER_IDENTITY,
                               "render_size": IMAGE_SIZE, "val_share": 0.1, "test_share": 0.1})
    params["prepare"]["image_size"] = IMAGE_SIZE
    # the balanced calibration set takes size / 4 images per group x label cell: at small fractions the minority's
    # cells are smaller than 512 / 4 (at full size: 512, the shipped value)
    params["calibration"]["size"] = min(params["calibration"]["size"], identities * IMAGES_PER_IDENTITY // 8 // 4 * 4)
    params["verify"]["generate"].update({
        "pairs_per_fold": max(1, round(RFW_PAIRS_PER_FOLD * fraction)),
        "test_identities_per_race": max(8, round(RFW_IDENTITIES * fraction)),
        "test_images_per_identity": RFW_IMAGES_PER_IDENTITY})
    return params


class Sampler:
    """Peak summed RSS of DVC's descendants, per stage (the stage DVC last announced)."""

    def __init__(self, dvc: subprocess.Popen):
        self.process = psutil.Process(dvc.pid)
        self.stage = "(dvc start-up)"
        self.peaks: dict[str, int] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.done.wait(0.2):
            total = 0
            try:
                children = self.process.children(recursive=True)
            except psutil.Error:
                break
            for child in children:
                try:
                    total += child.memory_info().rss
                except psutil.Error:  # ended between listing and reading
                    pass
            self.peaks[self.stage] = max(self.peaks.get(self.stage, 0), total)

    def stop(self) -> None:
        self.done.set()
        self.thread.join()


def run_study(repo: Path, env: dict) -> tuple[list[dict], float]:
    """``dvc repro`` in ``repo``: per stage, name, seconds, device, GPU peak bytes, host peak RSS."""
    start = time.perf_counter()
    process = subprocess.Popen(["dvc", "repro"], cwd=repo, env={**env, "FAIRQUANT_STAGE_REPORT": "1"}, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    sampler = Sampler(process)
    stages, tail = [], []
    print(HEADER, flush=True)
    for text in process.stdout:
        tail = (tail + [text])[-60:]
        if text.startswith("Running stage"):
            now = time.perf_counter()
            if stages:  # the previous stage ended: its line now, so that a long run shows its progress
                finish(stages[-1], now, sampler)
            stages.append({"stage": text.split("'")[1], "began": now, "device": "-", "gpu_peak": 0})
            sampler.stage = stages[-1]["stage"]
        elif text.startswith("fairquant-stage:") and stages:
            fields = dict(part.split("=") for part in text.split()[1:])
            stages[-1]["device"] = fields["device"]
            stages[-1]["gpu_peak"] = max(stages[-1]["gpu_peak"], int(fields["gpu_peak_bytes"]))
    code = process.wait()
    end = time.perf_counter()
    sampler.stop()
    if stages:
        finish(stages[-1], end, sampler)
    if code != 0:
        raise SystemExit("dvc repro failed:\n" + "".join(tail))
    return stages, end - start


HEADER = f"{'stage':<44} {'seconds':>8} {'device':>6} {'peak RSS MiB':>13} {'peak GPU MiB':>13}"


def finish(stage: dict, end: float, sampler: Sampler) -> None:
    stage["seconds"] = end - stage.pop("began")
    stage["rss_peak"] = sampler.peaks.get(stage["stage"], 0)
    print(f"{stage['stage']:<44} {stage['seconds']:>8.1f} {stage['device']:>6} {stage['rss_peak'] / MIB:>13.0f} "
          f"{stage['gpu_peak'] / MIB:>13.0f}", flush=True)


def branch(name: str) -> str:
    base = name.split("@")[0]
    if base.startswith("verify_"):
        return "verification"
    if base.startswith("sweep_"):
        return "sweep"
    return "report" if base == "report" else "classification"


def print_sizes(params: dict, fraction: float) -> None:
    generate, verify = params["generate"], params["verify"]["generate"]
    images = generate["identities"] * generate["images_per_identity"]
    print(f"fraction {fraction}: classification {images:,} images at {IMAGE_SIZE} px; verification "
          f"{20 * verify['pairs_per_fold']:,} pairs per race ({verify['test_identities_per_race']:,} identities x "
          f"{verify['test_images_per_identity']} images); CUDA visible: {_cuda_visible()}; "
          f"{os.cpu_count()} CPUs", flush=True)


def print_figures(stages: list[dict], total: float) -> None:
    spent: dict[str, float] = {}
    for s in stages:
        spent[branch(s["stage"])] = spent.get(branch(s["stage"]), 0.0) + s["seconds"]
    for name, seconds in spent.items():
        print(f"branch {name}: {seconds:.0f} s")
    scoring = sum(s["seconds"] for s in stages if s["stage"].split("@")[0] in (
        "predict", "sweep_predict", "evaluate", "sweep_evaluate", "verify_evaluate"))
    print(f"predict and evaluation (both branches, sweep included): {scoring:.0f} s = "
          f"{100 * scoring / total:.0f}% of the study (issue 21 on a GPU: <= 15%)")
    print(f"whole study (dvc repro, cold): {total:.0f} s")


def _cuda_visible() -> bool:
    import torch

    return torch.cuda.is_available()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=1.0, help="scale CelebA / RFW sizes by this (0, 1]")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/fairquant-scale"),
                        help="an absent or empty folder: the study's repository is built in it")
    args = parser.parse_args()
    if not 0 < args.fraction <= 1:
        raise SystemExit(f"--fraction must be in (0, 1], found {args.fraction}")
    if args.workdir.exists() and any(args.workdir.iterdir()):
        raise SystemExit(f"--workdir {args.workdir} is not empty; name an absent or empty folder")
    args.workdir.mkdir(parents=True, exist_ok=True)
    params = scaled_params(args.fraction)
    print_sizes(params, args.fraction)
    env = study_repo(args.workdir / "study", params)
    stages, total = run_study(args.workdir / "study", env)
    print_figures(stages, total)


if __name__ == "__main__":
    main()
