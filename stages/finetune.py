"""Train the fp32 model on the training split; log per-epoch curves with dvclive."""

from pathlib import Path

import numpy as np
import typer
from dvclive import Live
from rich.progress import Progress

from fairquant.data.prepare import load_prepared
from fairquant.io import atomic_dir, save_checkpoint, write_json
from fairquant.metrics import group_labels
from fairquant.models import build_model, load_pretrained, pick_device
from fairquant.params import load_params
from fairquant.training import seed_everything, train_classifier
from fairquant.variants import CHECKPOINT
from stages._cli import run

app = typer.Typer(add_completion=False)


@app.command()
def main(data: Path = typer.Option(..., help="prepared data folder"),
         out: Path = typer.Option(..., help="model folder to write"),
         live_dir: Path = typer.Option(..., "--live", help="dvclive folder for training curves"),
         params_file: Path = typer.Option(Path("params.yaml"), "--params")) -> None:
    params = load_params(params_file)
    table, images, info = load_prepared(data)
    seed_everything(params.finetune.seed, params.finetune.threads)
    model = build_model(params.model.arch, small_input_stem=params.model.small_input_stem)
    if params.model.pretrained:
        skipped = load_pretrained(model, params.model.pretrained)
        print(f"loaded {params.model.pretrained}; freshly initialised: {', '.join(skipped) or 'none'}")
    train, val = table[table["split"] == "train"], table[table["split"] == "val"]
    device = pick_device(params.finetune.device)
    with Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None) as live, \
            Progress(transient=True) as progress:
        task = progress.add_task(f"finetune on {device}", total=len(train) * params.finetune.epochs)

        def log_epoch(log) -> None:
            live.log_metric("train/loss", log.train_loss)
            live.log_metric("train/accuracy", log.train_accuracy)
            live.log_metric("val/accuracy", log.val_accuracy)
            for group, accuracy in log.val_group_accuracy.items():
                live.log_metric(f"val/group_accuracy/{group}", accuracy)
            live.next_step()
            progress.console.print(f"epoch {log.epoch + 1}: loss {log.train_loss:.3f}, "
                                   f"val accuracy {log.val_accuracy:.3f}")

        model = train_classifier(
            model, images[train["row"].to_numpy()],
            train["y_true"].to_numpy(), images[val["row"].to_numpy()], val["y_true"].to_numpy(),
            group_labels(val, params.data.protected), params.finetune, device,
            on_epoch=log_epoch, on_batch=lambda n: progress.advance(task, n))
    config = {"kind": "fp32", "name": "fp32", "arch": params.model.arch,
              "small_input_stem": params.model.small_input_stem, "image_size": info["image_size"],
              "synthetic": info["synthetic"], "target": info["target"], "protected": info["protected"],
              "finetune": params.finetune.model_dump()}
    with atomic_dir(out) as tmp:
        save_checkpoint(tmp / CHECKPOINT, model.state_dict(), config)
        write_json(tmp / "info.json", config)
    print(f"saved {out / CHECKPOINT}")


if __name__ == "__main__":
    run(app)
