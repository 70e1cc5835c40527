"""Train the fp32 model on the training split; log per-epoch curves with dvclive."""

from pathlib import Path

import typer

from fairquant.data.prepare import load_prepared
from fairquant.models import build_model, load_pretrained
from fairquant.params import load_params
from fairquant.training import seed_everything
from fairquant.compress.checkpoints import CHECKPOINT, save_variant
from fairquant.training import fit_logged
from stages._cli import run

app = typer.Typer(add_completion=False)


@app.command()
def main(seed: int = typer.Option(..., help="training seed (one of params.yaml's seeds)"),
         data: Path = typer.Option(..., help="prepared data folder"),
         out: Path = typer.Option(..., help="model folder to write"),
         live_dir: Path = typer.Option(..., "--live", help="dvclive folder for training curves"),
         params_file: Path = typer.Option(Path("params.yaml"), "--params")) -> None:
    params = load_params(params_file)
    table, images, info = load_prepared(data)
    seed_everything(seed, params.finetune.threads)
    model = build_model(params.model.arch, small_input_stem=params.model.small_input_stem,
                        image_size=info["image_size"])
    if params.model.pretrained:
        skipped = load_pretrained(model, params.model.pretrained)
        print(f"loaded {params.model.pretrained}; freshly initialised: {', '.join(skipped) or 'none'}")
    model = fit_logged(model, table, images, params.data.protected, params.finetune, live_dir, f"finetune (seed {seed})",
                       seed=seed, section="finetune")
    config = {"kind": "fp32", "name": "fp32", "arch": params.model.arch,
              "small_input_stem": params.model.small_input_stem, "image_size": info["image_size"],
              "synthetic": info["synthetic"], "target": info["target"], "protected": info["protected"],
              "finetune": params.finetune.model_dump(), "training_seed": seed}
    save_variant(out, model.state_dict(), config)
    print(f"saved {out / CHECKPOINT}")


if __name__ == "__main__":
    run(app)
