"""The verification branch's time on the default, stage by stage as `dvc repro` runs it, and embedding throughput.

    python benchmarks/verification.py          # runs the five verify stages' commands into a scratch folder
    python benchmarks/verification.py --throughput-only

Wall time includes each stage's start-up (imports, loading models), as `dvc repro` pays it. A script, not a
timed test: these machines are noisy, so the figures are measurements of one run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def stage_commands(scratch: Path) -> list[tuple[str, list[str]]]:
    py = [sys.executable, "-m"]
    raw, prepared, models = scratch / "raw", scratch / "prepared", scratch / "models"
    params = scratch / "params.yaml"
    return [
        ("verify_generate", py + ["stages.verify_generate", "--out", str(raw), "--params", str(params)]),
        ("verify_prepare", py + ["stages.verify_prepare", "--out", str(prepared), "--params", str(params)]),
        ("verify_train", py + ["stages.verify_train", "--data", str(prepared), "--out", str(models / "fp32"),
                               "--live", str(scratch / "live-fp32"), "--params", str(params)]),
        ("verify_compress", py + ["stages.verify_compress", "--model", str(models / "fp32"), "--data", str(prepared),
                                  "--out", str(models / "variants"), "--live", str(scratch / "live-variants"),
                                  "--params", str(params)]),
        ("verify_evaluate", py + ["stages.verify_evaluate", "--data", str(prepared), "--fp32", str(models / "fp32"),
                                  "--variants", str(models / "variants"), "--predictions", str(scratch / "pred"),
                                  "--metrics", str(scratch / "verify.json"), "--params", str(params)]),
    ]


def scratch_params(scratch: Path) -> Path:
    """params.yaml with the verification roots pointed into the scratch folder."""
    import yaml

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    data = raw["verify"]["data"]
    data["train_root"] = str(scratch / "raw" / "race_per_7000")
    data["rfw_root"] = str(scratch / "raw" / "rfw")
    data["synthetic_folder"] = str(scratch / "raw" / "faces")
    path = scratch / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def throughput(model_dir: Path, prepared: Path, repeats: int = 3) -> None:
    """Embedding throughput (image + mirror, as the protocol embeds) of fp32 and each variant on the test images."""
    import numpy as np
    import torch

    from fairquant.compress.variants import load_variant
    from fairquant.data.verification import load_verification
    from fairquant.verify.embedding import embed

    test = np.asarray(load_verification(prepared).test_images)
    folders = [model_dir / "fp32"] + sorted(p for p in (model_dir / "variants").iterdir() if p.is_dir())
    print(f"embedding throughput on {len(test)} test images (each with its mirror), {torch.get_num_threads()} threads:")
    for folder in folders:
        variant = load_variant(folder, batch_size=256, repeats=0, latency_batch=64)
        embed(variant.forward, test[:256], 256)  # warm-up (compilation for int8)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            embed(variant.forward, test, 256)
            times.append(time.perf_counter() - start)
        best = min(times)
        print(f"  {variant.name:28s} {variant.kernels:14s} {len(test) / best:8.0f} images/s ({best:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--throughput-only", action="store_true",
                        help="measure throughput on the pipeline's own data/models/verify (after dvc repro)")
    args = parser.parse_args()
    if args.throughput_only:
        throughput(ROOT / "data" / "models" / "verify", ROOT / "data" / "prepared_verify")
        return
    with tempfile.TemporaryDirectory(prefix="fq-verify-bench-") as tmp:
        scratch = Path(tmp)
        scratch_params(scratch)
        total = 0.0
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for name, command in stage_commands(scratch):
            start = time.perf_counter()
            done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
            elapsed = time.perf_counter() - start
            total += elapsed
            if done.returncode:
                sys.exit(f"{name} failed ({done.returncode}):\n{done.stderr[-2000:]}")
            print(f"{name:16s} {elapsed:7.1f} s")
        print(f"{'total':16s} {total:7.1f} s")
        throughput(scratch / "models", scratch / "prepared")


if __name__ == "__main__":
    main()
