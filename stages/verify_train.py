"""Train the face-embedding network with a margin loss on the prepared verification training set."""

from pathlib import Path

import typer

from fairquant.compress.checkpoints import CHECKPOINT, save_variant
from fairquant.data.verification import load_verification
from fairquant.io import atomic_dir, check_outputs, write_json
from fairquant.models import build_model, pick_device
from fairquant.params import load_params
from fairquant.training import seed_everything
from fairquant.verify.pretrained import load_backbone
from fairquant.verify.training import train_embedding
from stages._cli import run

app = typer.Typer(add_completion=False)


@app.command()
def main(data: Path = typer.Option(..., help="prepared verification data folder"),
         out: Path = typer.Option(..., help="model folder to write"),
         live_dir: Path = typer.Option(..., "--live", help="dvclive folder for training curves"),
         params_file: Path = typer.Option(Path("params.yaml"), "--params")) -> None:
    params = load_params(params_file)
    check_outputs(folders={"--out": out, "--live": live_dir})  # before any work
    verify = params.verify
    prepared = load_verification(data, data=params.verify.data)
    seed_everything(verify.train.seed, verify.train.threads)
    model = build_model(verify.model.arch, small_input_stem=verify.model.small_input_stem,
                        embedding_dim=verify.model.embedding_dim, image_size=prepared.image_size,
                        image_size_key="verify.data.image_size")
    if verify.model.pretrained:
        load_backbone(model, verify.model.pretrained, verify.model.arch)
    # the curves (or the record that none ran) replace --live only once the model is saved
    with atomic_dir(live_dir) as tmp_live:
        trained_here = verify.train.epochs > 0
        head = None
        if trained_here:
            device = pick_device(verify.train.device, "verify.train.device")
            model, head = train_embedding(model, prepared.train_images, prepared.train_rows, prepared.identities,
                                          verify.train, device, tmp_live, seed=verify.train.seed,
                                          processes=params.distributed)
        else:  # audited as it is: no curves, the log folder says so
            write_json(tmp_live / "metrics.json", {"trained_here": False, "pretrained": verify.model.pretrained})
        config = {"kind": "fp32", "name": "fp32", "task": "verification", "arch": verify.model.arch,
                  "small_input_stem": verify.model.small_input_stem, "embedding_dim": verify.model.embedding_dim,
                  "image_size": prepared.image_size, "synthetic": prepared.info["synthetic"],
                  "identities": int(prepared.identities.max()) + 1, "finetune": verify.train.model_dump(),
                  "training_seed": verify.train.seed, "trained_here": trained_here,
                  "pretrained": verify.model.pretrained}
        save_variant(out, model.eval().state_dict(), config, head=None if head is None else head.state_dict())
    how = (f"trained on {config['identities']} identities, {len(prepared.train_rows)} images" if trained_here else
           f"not trained here: {verify.model.pretrained} as it is")
    print(f"saved {out / CHECKPOINT} ({how})")


if __name__ == "__main__":
    run(app)
