"""ViT-small (the architecture "Beyond Naive Quantization" quantizes) on this CPU: parameters, the size each compressor
stores, fp32 vs int8 latency through the x86 kernels (with their agreement check), and fp32 training throughput.

    python benchmarks/vit.py                     # 32 px, latency batch 64, 2 threads
    python benchmarks/vit.py --image-size 64 --threads 4

Random uint8 images stand in for data (untrained weights): speeds and sizes do not depend on what the images show.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fairquant.compress import fakequant, int8, kmeans, pruning  # noqa: E402
from fairquant.compress.checkpoints import fp32_size_bytes  # noqa: E402
from fairquant.models import build_model  # noqa: E402
from fairquant.params import QuantSchemeParams, TrainingParams  # noqa: E402
from fairquant.training import train_classifier  # noqa: E402


def line(name: str, value: str, note: str = "") -> None:
    print(f"{name:<52} {value:<26} {note}", flush=True)


def random_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def timed(build):
    start = time.perf_counter()
    built = build()
    return built, time.perf_counter() - start


def bench_sizes(model, images: np.ndarray, fp32: int) -> None:
    """What each compressor stores (the sizes its variants report), and how long it takes on this model."""
    for bits in (8, 4):
        scheme = QuantSchemeParams(bits=bits, activation_bits=bits, observer="minmax")
        simulated, seconds = timed(lambda: fakequant.calibrate(fakequant.quantize_model(model, scheme), images))
        size = fakequant.quantized_size_bytes(simulated)
        line(f"fake-quant W{bits}A{bits} per-channel size", f"{size / 1e6:.2f} MB ({fp32 / size:.2f}x)",
             f"({seconds:.1f} s to quantize and calibrate)")
    clustered, seconds = timed(lambda: kmeans.cluster_model(copy.deepcopy(model), 16, 30))
    size = kmeans.clustered_size_bytes(clustered, 16)
    line("k-means k=16 size", f"{size / 1e6:.2f} MB ({fp32 / size:.2f}x)", f"({seconds:.1f} s, 30 Lloyd iterations)")
    pruned, seconds = timed(lambda: pruning.prune_model(copy.deepcopy(model), 0.8, "one_shot", 1, None))
    size = pruning.sparse_size_bytes(pruned)
    line("global pruning 80% size (bitmap format)", f"{size / 1e6:.2f} MB ({fp32 / size:.2f}x)", f"({seconds:.1f} s)")


def bench_int8(model, image_size: int, batch: int, repeats: int, fp32: int) -> None:
    calibration = random_images(2 * batch, image_size)
    reduce_range = int8.reduce_range_for("auto")
    (state, reference, check), seconds = timed(lambda: int8.quantize_int8(
        model, calibration, batch, image_size, "histogram", 1.0, reduce_range, 5.0,
        held_out=random_images(batch, image_size, seed=1)))
    size = int8.stored_size_bytes(reference)
    line("int8 (x86 PT2E) size", f"{size / 1e6:.2f} MB ({fp32 / size:.2f}x)",
         f"({seconds:.1f} s to calibrate, convert, compile and check)")
    line(f"  kernels on {check.cpu_capability}, reduce_range {str(reduce_range).lower()}",
         f"{check.sqnr_db:.1f} dB vs q/dq reference", f"({'agrees' if check.passed else 'REFUSED'}: {check.summary()})")
    eager = int8.measure_latency(model, batch, image_size, repeats, "eager")
    fp32_compiled = int8.measure_latency(int8.compile_for_cpu(model), batch, image_size, repeats, "compiled")
    int8_compiled = int8.measure_latency(int8.compile_for_cpu(reference), batch, image_size, repeats, "compiled")
    line(f"latency fp32 eager (batch {batch}, {image_size} px)", f"{eager.median_ms:.0f} ms",
         f"({eager.images_per_s:.0f} images/s)")
    line("latency fp32 compiled", f"{fp32_compiled.median_ms:.0f} ms", f"({fp32_compiled.images_per_s:.0f} images/s)")
    line("latency int8 compiled", f"{int8_compiled.median_ms:.0f} ms",
         f"({int8_compiled.images_per_s:.0f} images/s; {fp32_compiled.median_ms / int8_compiled.median_ms:.2f}x "
         f"vs fp32 compiled, {eager.median_ms / int8_compiled.median_ms:.2f}x vs eager)")


def bench_training(image_size: int, images: int, batch: int) -> None:
    """One short slice of an fp32 epoch (augmentation on, as finetune trains), timed with validation excluded."""
    model = build_model("vit_small", small_input_stem=False, image_size=image_size)
    data, labels = random_images(images, image_size), np.arange(images) % 2
    _, seconds = timed(lambda: train_classifier(
        model, data, labels, data[:batch], labels[:batch], np.zeros(batch),
        TrainingParams(epochs=1, batch_size=batch, lr=0.001), torch.device("cpu"), seed=0))
    line(f"fp32 training ({images} images, batch {batch})", f"{images / seconds:.1f} images/s",
         f"({seconds:.1f} s including one validation pass over {batch} images)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64, help="latency batch")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-images", type=int, default=512)
    parser.add_argument("--skip", nargs="*", default=[], choices=["sizes", "int8", "training"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model("vit_small", small_input_stem=False, image_size=args.image_size).eval()
    fp32 = fp32_size_bytes(model)
    line("vit_small parameters", f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M",
         f"(patch {model.patch_size} px, {model.pos_embed.shape[1]} tokens at {args.image_size} px; "
         f"torch {torch.__version__}, {args.threads} threads)")
    line("fp32 size", f"{fp32 / 1e6:.2f} MB")
    if "sizes" not in args.skip:
        bench_sizes(model, random_images(64, args.image_size), fp32)
    if "int8" not in args.skip:
        bench_int8(model, args.image_size, args.batch, args.repeats, fp32)
    if "training" not in args.skip:
        bench_training(args.image_size, args.train_images, 128)


if __name__ == "__main__":
    main()
