"""Each remedy's time on the default, run as the pipeline runs it (its stage command), into a scratch folder.

    dvc repro                          # first: the default's data, fp32 model, calibration sets and predictions
    python benchmarks/remedies.py      # every remedy once for training seed 0
    python benchmarks/remedies.py --only fairalm ceag

Wall time includes the stage's start-up (imports, loading the model), as `dvc repro` pays it. A script, not a
timed test: these machines are noisy, so the figures are measurements of one run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commands(out: Path, seed: int) -> dict[str, list[str]]:
    base = ["--seed", str(seed), "--data", "data/prepared", "--model", f"data/models/s{seed}/fp32"]
    stage = [sys.executable, "-m", "stages.mitigate"]
    before = {m: stage + ["--method", m, *base, "--out", str(out / m), "--live", str(out / f"live-{m}")]
              for m in ("fairalm", "dp_regularizer")}
    during = {f"{m}+{c}": stage + ["--method", m, "--compressor", c, *base, "--calibration",
                                   f"data/calibration/s{seed}/train", "--out", str(out / f"{m}+{c}"),
                                   "--live", str(out / f"live-{m}-{c}")]
              for m in ("ceag", "equalized_loss") for c in ("prune", "qat")}
    after = {f"ptq+{m}": stage + ["--method", m, "--predictions", f"data/predictions/s{seed}/variants/ptq",
                                  "--data", "data/prepared", "--out", str(out / f"ptq+{m}")]
             for m in ("caleqodds", "threshold")}
    precision = {"sensitivity+ptq": stage + ["--method", "sensitivity", *base, "--calibration",
                                             f"data/calibration/s{seed}/train", "--out", str(out / "sensitivity+ptq")]}
    return {**before, **during, **after, **precision}


def outcome(folder: Path) -> str:
    info_path = folder / "info.json"
    if not info_path.is_file():
        return ""
    info = json.loads(info_path.read_text())
    mitigation = info.get("mitigation") or info.get("details", {}).get("mitigation", {})
    if "constraint" in mitigation:
        held = {split: c["holds"] for split, c in mitigation["constraint"].items()}
        drops = {split: round(c["max_excess_drop"], 3) for split, c in mitigation["constraint"].items()}
        return f"max excess drop {drops}, holds {held}"
    if "multipliers" in mitigation:
        return "multipliers " + ", ".join(f"{g} {v:+.3f}" for g, v in mitigation["multipliers"].items())
    if "plan" in mitigation:
        return f"kept {mitigation['plan']['kept']}, {mitigation['plan']['size_bytes'] / 1e6:.2f} MB"
    if "collapsed" in mitigation:
        return f"collapsed groups: {mitigation['collapsed'] or 'none'}"
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="remedy names (as printed) to run; default all")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (ROOT / f"data/predictions/s{args.seed}/variants/ptq/test.parquet").is_file():
        raise SystemExit("error: run `dvc repro` first; the benchmark starts from the default's fp32 model and predictions")
    with tempfile.TemporaryDirectory() as scratch:
        todo = commands(Path(scratch), args.seed)
        if args.only:
            unknown = sorted(set(args.only) - set(todo))
            if unknown:
                raise SystemExit(f"error: unknown remedies {unknown}; choose among {sorted(todo)}")
            todo = {k: v for k, v in todo.items() if k in args.only}
        print(f"{'remedy':<24} {'wall s':>8}  outcome")
        for name, command in todo.items():
            start = time.perf_counter()
            result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if result.returncode != 0:
                print(f"{name:<24} {seconds:8.1f}  FAILED: {result.stderr.strip().splitlines()[-1]}")
                continue
            print(f"{name:<24} {seconds:8.1f}  {outcome(Path(scratch) / name)}", flush=True)


if __name__ == "__main__":
    main()
