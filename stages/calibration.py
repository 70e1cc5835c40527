"""Build every calibration set (train, balanced, synthetic, distilled) with its estimated group composition."""

from pathlib import Path

import numpy as np
import typer
from rich.progress import Progress

from fairquant.compress import calibration
from fairquant.data.prepare import calibration_indices
from fairquant.data.prepared import load_prepared
from fairquant.io import atomic_dir, check_outputs, write_images, write_json
from fairquant.models import scoring_device
from fairquant.params import load_params
from fairquant.training import seed_everything
from fairquant.compress.checkpoints import load_fp32
from stages._cli import run

app = typer.Typer(add_completion=False)


@app.command()
def main(data: Path = typer.Option(..., help="prepared data folder"),
         model_dir: Path = typer.Option(..., "--model", help="fp32 model folder (distillation, group classifier)"),
         out: Path = typer.Option(..., help="folder that receives one sub-folder per set"),
         params_file: Path = typer.Option(Path("params.yaml"), "--params")) -> None:
    params = load_params(params_file)
    check_outputs(folders={"--out": out})  # before any work
    device = scoring_device(params.evaluate.device)  # the group classifier's features
    cal = params.calibration
    table, images, info = load_prepared(data, params, params_file=params_file)
    model, _ = load_fp32(model_dir, params=params, params_file=params_file)
    seed_everything(cal.seed)
    protected = params.data.protected
    # Everything is computed before anything is written: a bad folder or size leaves no partial sets.
    train_rows = calibration_indices(table, cal.size, cal.seed)
    balanced_rows = calibration.balanced_rows(table, protected, cal.size, cal.seed)
    synthetic, synthetic_info = calibration.folder_images(cal.synthetic_folder, info["image_size"],
                                                          calibration.held_out_hashes(table, images))
    # Each balanced image's group x label cell, so that a compressor taking fewer images keeps the cells equal.
    cell_names, cell_codes = np.unique(calibration.cells_of(table, balanced_rows, protected), return_inverse=True)
    with Progress(transient=True) as progress:
        task = progress.add_task("distilling (ZeroQ)", total=cal.distilled_iterations * -(-cal.distilled_size // 64))
        distilled, distilled_info = calibration.distilled_images(
            model, cal.distilled_size, info["image_size"], cal.distilled_iterations, cal.distilled_lr, cal.seed,
            progress=lambda n: progress.advance(task, n))
    sets = {
        "train": (images[train_rows], {"source": "random training images",
                                       "true_composition": calibration.true_composition(table, train_rows, protected)}),
        "balanced": (images[balanced_rows], {"source": "equal training images per group x label cell",
                                             "true_composition": calibration.true_composition(table, balanced_rows, protected),
                                             "cells": cell_names.tolist()}),
        "synthetic": (synthetic, {"source": f"every image in {cal.synthetic_folder}", **synthetic_info}),
        "distilled": (distilled, {"source": "ZeroQ: noise optimised to match the fp32 BatchNorm statistics", **distilled_info}),
    }
    groups = calibration.GroupClassifier(model, table, images, protected, cal.seed,
                                         device=device)
    for name, (pixels, details) in sets.items():
        summary = {"set": name, "size": int(len(pixels)), "image_size": info["image_size"], **details,
                   "estimated_composition": groups.composition(pixels), "group_classifier": groups.quality}
        with atomic_dir(out / name) as tmp:
            write_images(tmp / "images.npy", pixels)
            write_json(tmp / "info.json", summary)
            if name == "balanced":
                np.save(tmp / "cells.npy", cell_codes.astype(np.int16))  # index into info.json's "cells"
        estimate = ", ".join(f"{g} {share:.2f}" for g, share in summary["estimated_composition"].items())
        print(f"{name}: {len(pixels)} images; estimated groups {estimate}")
    print(f"group classifier on val: accuracy {groups.quality['val_accuracy']:.3f}, "
          f"balanced accuracy {groups.quality['val_balanced_accuracy']:.3f}")


if __name__ == "__main__":
    run(app)
