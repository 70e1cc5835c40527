"""Time of the multi-class metrics on synthetic predictions at the sizes the reference works use.

    python benchmarks/multiclass.py            # UTKFace-like (5 races x 2 genders), FairFace-like (7 x 2),
                                               # CIFAR-100 with each class as its group (10k test images)

Each case times `multiclass_metrics` (one model) and `multiclass_paired` (a variant vs fp32: gap changes with
exact-beta bounds and Balancing Act's drops) once, with evaluate.bootstrap = 1000. A script, not a timed test:
these machines are noisy, so the figures are measurements of one run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fairquant.fairness.multiclass import multiclass_metrics
from fairquant.fairness.multiclass_paired import multiclass_paired

CASES = {  # name: (test rows, classes, groups, class as the group)
    "utkface race 5 x gender 2": (4700, 5, 2, False),
    "fairface race 7 x gender 2": (10950, 7, 2, False),
    "cifar100 class as group": (10000, 100, 100, True),
}


def predictions(n: int, k: int, g: int, class_as_group: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    groups = np.array([f"c{c:03d}" for c in y]) if class_as_group else rng.choice([f"g{i}" for i in range(g)], n)
    fp32 = np.where(rng.random(n) < 0.75, y, rng.integers(0, k, n))
    variant = np.where(rng.random(n) < 0.92, fp32, rng.integers(0, k, n))
    return y, fp32, variant, groups, [f"c{c:03d}" for c in range(k)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()
    options = {"n_boot": args.bootstrap, "confidence": 0.95, "seed": 0, "min_group_size": 1}
    print(f"{'case':32s} {'rows':>6s} {'metrics (s)':>12s} {'paired (s)':>11s}  max excess drop [95%]")
    for name, (n, k, g, class_as_group) in CASES.items():
        y, fp32, variant, groups, classes = predictions(n, k, g, class_as_group)
        start = time.perf_counter()
        multiclass_metrics(y, variant, groups, classes, **options)
        metrics_s = time.perf_counter() - start
        start = time.perf_counter()
        paired = multiclass_paired(y, fp32, variant, groups, classes, **options)
        paired_s = time.perf_counter() - start
        worst = paired["balancing_act"]["max_excess_drop"]
        print(f"{name:32s} {n:6d} {metrics_s:12.2f} {paired_s:11.2f}  {worst['value']:+.3f} "
              f"[{worst['ci_low']:+.3f}, {worst['ci_high']:+.3f}] ({worst['group']})")


if __name__ == "__main__":
    main()
