"""Measured speed and size figures for the issue's targets. A script, not a timed test (machines are noisy).

    python benchmarks/run.py            # component figures on the current data/ (run `dvc repro` first)
    python benchmarks/run.py --full     # also the wall time of the whole default `dvc repro` in a fresh copy
    python benchmarks/run.py --only seeds --seeds 5   # fp32 accuracy and gap for training seeds 0-4
    python benchmarks/memory.py         # prepare and training memory on a CelebA-size generated set
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fairquant.compress import int8  # noqa: E402
from fairquant.compress.checkpoints import fp32_size_bytes  # noqa: E402
from fairquant.data.loaders import load_dataset  # noqa: E402
from fairquant.data.prepare import build_image_store, load_prepared  # noqa: E402
from fairquant.fairness.metrics import fairness_metrics  # noqa: E402
from fairquant.models import build_model  # noqa: E402
from fairquant.params import FinetuneParams, load_params  # noqa: E402
from fairquant.training import train_classifier  # noqa: E402


def line(name: str, value: str, target: str = "") -> None:
    print(f"{name:<48} {value:<28} {target}")


def bench_prepare(params) -> None:
    raw = load_dataset(params.data)
    start = time.perf_counter()
    build_image_store(raw, params.prepare.image_size, params.prepare.workers, 1.0)
    elapsed = time.perf_counter() - start
    line("prepare throughput", f"{len(raw.table) / elapsed:.0f} images/s", f"({len(raw.table)} JPEGs, {params.prepare.workers} workers)")


def bench_finetune(params) -> None:
    table, images, _ = load_prepared(ROOT / "data" / "prepared")
    train = table[table["split"] == "train"].iloc[:1024]
    model = build_model(params.model.arch, small_input_stem=params.model.small_input_stem, image_size=images.shape[1])
    start = time.perf_counter()
    train_classifier(model, images[train["row"].to_numpy()], train["y_true"].to_numpy(), images[:8],
                     np.zeros(8), np.zeros(8), FinetuneParams(epochs=1, batch_size=params.finetune.batch_size),
                     torch.device("cpu"), seed=0)
    line("finetune throughput", f"{len(train) / (time.perf_counter() - start):.0f} images/s",
         f"({params.model.arch}, {images.shape[1]} px, batch {params.finetune.batch_size})")


def bench_int8(arch: str, image_size: int, batch: int, repeats: int) -> None:
    """int8 vs fp32 speed, next to what makes the int8 figure trustworthy on this CPU: its int8 instruction set,
    whether activations had to be 7-bit (reduce_range), and how closely the kernels follow their q/dq reference."""
    torch.manual_seed(0)
    model = build_model(arch, small_input_stem=True).eval()
    calibration = np.random.default_rng(0).integers(0, 256, (batch * 2, image_size, image_size, 3), dtype=np.uint8)
    reduce_range = int8.reduce_range_for("auto")
    state = int8.calibrate_int8(model, calibration, batch, image_size, reduce_range=reduce_range)
    reference = int8.convert_int8(model, state, batch, image_size, reduce_range=reduce_range)
    compiled = int8.compile_for_cpu(reference)
    check = int8.check_kernels(model, reference, compiled, calibration, batch, reduce_range, 5.0)
    eager = int8.measure_latency(model, batch, image_size, repeats, "eager")
    fp32_compiled = int8.measure_latency(int8.compile_for_cpu(model), batch, image_size, repeats, "c")
    int8_compiled = int8.measure_latency(compiled, batch, image_size, repeats, "c")
    size_ratio = fp32_size_bytes(model) / int8.stored_size_bytes(reference)
    line(f"{arch} int8 vs fp32 compiled (batch {batch}, {image_size}px)",
         f"{fp32_compiled.median_ms / int8_compiled.median_ms:.2f}x", f"({fp32_compiled.median_ms:.1f} -> "
         f"{int8_compiled.median_ms:.1f} ms; target >= 3.5x)")
    line(f"  on {check.cpu_capability} (torch {check.torch_cpu_capability}), reduce_range {str(reduce_range).lower()}",
         f"{check.sqnr_db:.1f} dB vs q/dq reference", f"({'agrees' if check.passed else 'REFUSED by the check'}: "
         f"{check.summary()})")
    line(f"{arch} int8 compiled vs fp32 eager", f"{eager.median_ms / int8_compiled.median_ms:.2f}x",
         f"(eager fp32 {eager.median_ms:.1f} ms)")
    line(f"{arch} size ratio fp32 / int8", f"{size_ratio:.2f}x", "(target >= 3.9x)")


def bench_compressors(params) -> None:
    """Each compressor on the default fp32 checkpoint and calibration set: wall time and size ratio."""
    from fairquant.compress import calibration, fakequant, kmeans, pruning
    from fairquant.params import QuantSchemeParams
    from fairquant.compress.checkpoints import load_fp32

    model, config = load_fp32(ROOT / "data" / "models" / "fp32")
    images, _ = calibration.load_set(ROOT / "data" / "calibration" / "train", None, "size")
    fp32 = fp32_size_bytes(model)
    size = config["image_size"]

    def timed(label: str, build, size_of, target: str = "") -> None:
        start = time.perf_counter()
        built = build()
        elapsed = time.perf_counter() - start
        line(f"{label}: time / size ratio", f"{elapsed:.1f} s / {fp32 / size_of(built):.2f}x", target)

    timed("ptq int8 (x86 kernels, 512 images)", lambda: int8.convert_int8(
        model, int8.calibrate_int8(model, images, 64, size), 64, size), int8.stored_size_bytes,
        "(size target >= 3.9x)")
    for bits, activation_bits in ((4, 8), (4, 4), (2, 8)):
        scheme = QuantSchemeParams(bits=bits, activation_bits=activation_bits)
        timed(f"ptq w{bits}a{activation_bits} simulated (512 images)",
              lambda: fakequant.calibrate(fakequant.quantize_model(model, scheme), images),
              fakequant.quantized_size_bytes, "(size target >= 7.5x at 4 bits)" if bits == 4 else "")
    import copy

    timed("kmeans k=16 (30 Lloyd iterations)", lambda: kmeans.cluster_model(copy.deepcopy(model), 16, 30),
          lambda m: kmeans.clustered_size_bytes(m, 16), "(size target >= 7.5x)")
    timed("kmeans k=256", lambda: kmeans.cluster_model(copy.deepcopy(model), 256, 30),
          lambda m: kmeans.clustered_size_bytes(m, 256))
    timed("prune s=0.8 one-shot (no fine-tuning)", lambda: pruning.prune_model(copy.deepcopy(model), 0.8, "one_shot", 1, None),
          pruning.sparse_size_bytes)
    timed("prune s=0.9 one-shot (no fine-tuning)", lambda: pruning.prune_model(copy.deepcopy(model), 0.9, "one_shot", 1, None),
          pruning.sparse_size_bytes)
    cal = params.calibration
    start = time.perf_counter()
    calibration.distilled_images(copy.deepcopy(model), cal.distilled_size, size, cal.distilled_iterations,
                                 cal.distilled_lr, 0)
    line(f"distilled set (ZeroQ, {cal.distilled_size} images x {cal.distilled_iterations} steps)",
         f"{time.perf_counter() - start:.1f} s")


def bench_seeds(params, seeds: int) -> None:
    """The default's fp32 model per training seed, trained exactly as the finetune stage does (data/prepared from
    `dvc repro`): test accuracy, the minority's accuracy gap and TPR gap with their CIs."""
    from fairquant.fairness.metrics import group_labels
    from fairquant.training import predict_scores, seed_everything

    table, images, _ = load_prepared(ROOT / "data" / "prepared")
    train, val, test = (table[table["split"] == s] for s in ("train", "val", "test"))
    protected = params.data.protected
    ev = params.evaluate
    reached = []
    for seed in range(seeds):
        seed_everything(seed, params.finetune.threads)
        model = build_model(params.model.arch, small_input_stem=params.model.small_input_stem,
                            image_size=images.shape[1])
        start = time.perf_counter()
        model = train_classifier(model, images, train["y_true"].to_numpy(), images, val["y_true"].to_numpy(),
                                 group_labels(val, protected), params.finetune, torch.device("cpu"), seed=seed,
                                 rows=train["row"].to_numpy(), val_rows=val["row"].to_numpy())
        seconds = time.perf_counter() - start
        scores = predict_scores(model, images, ev.batch_size, rows=test["row"].to_numpy())
        m = fairness_metrics(test["y_true"].to_numpy(), (scores > 0.5).astype(int), group_labels(test, protected),
                             privileged_group=ev.privileged_group, n_boot=ev.bootstrap, confidence=ev.confidence)
        acc, tpr = m["gaps"]["accuracy_gap"], m["gaps"]["tpr_gap"]
        reached.append(m["overall"]["accuracy"] >= 0.85 and acc["ci_low"] > 0)
        line(f"fp32 seed {seed}: test accuracy / accuracy gap [CI]",
             f"{m['overall']['accuracy']:.3f} / {acc['value']:.3f} [{acc['ci_low']:.3f}, {acc['ci_high']:.3f}]",
             f"TPR gap {tpr['value']:.3f} [{tpr['ci_low']:.3f}, {tpr['ci_high']:.3f}]; {seconds:.0f} s")
    line("seeds with accuracy >= 0.85 and gap CI excluding 0", f"{sum(reached)} of {seeds}", f"(target {seeds} of {seeds})")


def bench_bootstrap() -> None:
    rng = np.random.default_rng(0)
    n = 20_000
    groups = rng.choice(list("abcdefgh"), n)
    y_true = rng.integers(0, 2, n)
    y_pred = np.where(rng.random(n) < 0.85, y_true, 1 - y_true)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        fairness_metrics(y_true, y_pred, groups, n_boot=1000)
        times.append(time.perf_counter() - start)
    line("bootstrap CI, 1000 resamples x 20k rows x 8 groups", f"{np.median(times) * 1e3:.1f} ms", "(target <= 1 s)")


def bench_dvc(full: bool) -> None:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    start = time.perf_counter()
    out = subprocess.run(["dvc", "repro"], cwd=ROOT, env=env, capture_output=True, text=True)
    noop = time.perf_counter() - start
    state = "up to date" if "up to date" in out.stdout.lower() else "RAN STAGES (was not up to date)"
    line("no-op dvc repro", f"{noop:.1f} s", f"({state}; target <= 3 s)")
    if not full:
        return
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("dvc.yaml", "params.yaml", "fairquant", "stages", ".dvcignore"):
            src = ROOT / name
            (shutil.copytree if src.is_dir() else shutil.copy)(src, Path(tmp) / name)
        subprocess.run("git init -q && dvc init -q && git add -A && git -c user.name=bench -c user.email=bench@localhost commit -qm bench",
                       cwd=tmp, shell=True, env=env, check=True)  # dvclive needs a commit
        start = time.perf_counter()
        process = subprocess.Popen(["dvc", "repro"], cwd=tmp, env={**env, "PYTHONPATH": tmp}, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        stages, output = [], []
        for text in process.stdout:  # time each stage from dvc's own "Running stage" lines
            output.append(text)
            if text.startswith("Running stage"):
                stages.append((text.split("'")[1], time.perf_counter()))
        if process.wait() != 0:
            raise SystemExit("dvc repro failed:\n" + "".join(output[-40:]))
        end = time.perf_counter()
        spent = {}
        for (name, began), (_, finished) in zip(stages, stages[1:] + [("", end)]):
            line(f"  stage {name}", f"{finished - began:.0f} s")
            spent[name] = finished - began
        verify = sum(s for n, s in spent.items() if n.startswith("verify_"))
        remedies = sum(s for n, s in spent.items() if "mitigat" in n or n.split("@")[0].endswith(
            ("_before", "_before_ptq", "_control", "_control_ptq", "_during_prune", "_during_qat", "_during_kmeans",
             "_precision", "_calibrated")))
        sweep = {n: s for n, s in spent.items() if n.startswith("sweep_")}
        classification = sum(spent.values()) - verify - sum(sweep.values()) - spent.get("report", 0)
        line("classification branch, without remedies", f"{classification - remedies:.0f} s", "(issue 7: <= 300 s)")
        line("classification branch, with the default remedies", f"{classification:.0f} s", "(issue 8: <= 480 s)")
        line("verification branch", f"{verify:.0f} s")
        points = {n: s for n, s in sweep.items() if n.split("@")[0] in ("sweep_ptq", "sweep_qat", "sweep_kmeans",
                                                                          "sweep_prune")}
        line("sweep (the curves), all stages", f"{sum(sweep.values()):.0f} s", f"({len(points)} points)")
        for name, seconds in points.items():
            line(f"  per point: {name}", f"{seconds:.0f} s")
        shared = sum(sweep.values()) - sum(points.values())
        line("  shared: fp32 reuse, predict, evaluate", f"{shared:.0f} s")
        line("default dvc repro, whole graph, cold", f"{end - start:.0f} s", "(issue 9: <= 600 s)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", action="store_true", help="also time the whole default dvc repro (~5 min)")
    parser.add_argument("--seeds", type=int, default=0, help="train the default fp32 model for this many seeds "
                                                              "and print accuracy and gap per seed (~90 s each)")
    parser.add_argument("--only", choices=["seeds", "int8", "dvc"], help="run just one group of figures")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    params = load_params(ROOT / "params.yaml")
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}")
    if args.only in (None, "seeds") and args.seeds:
        bench_seeds(params, args.seeds)
    if args.only in (None, "int8"):
        bench_int8("resnet18", 32, 64, 10)
        bench_int8("resnet18", 64, 64, 10)
        bench_int8("mobilenet_v2", 32, 64, 10)
    if args.only is None:
        bench_prepare(params)
        bench_finetune(params)
        bench_compressors(params)
        bench_bootstrap()
    if args.only in (None, "dvc"):
        bench_dvc(args.full)


if __name__ == "__main__":
    main()
