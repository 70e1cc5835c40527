"""Train the fp32 model on the training split; log per-epoch curves with dvclive.

With ``--arch`` it trains another architecture with the same settings (the sweep's fp32 models); when that is
the study's own architecture, the study's fp32 model and its curves (``--study-model``, ``--study-live``) are
copied instead: the same settings and seed would train the same model again."""

import shutil
from pathlib import Path
from typing import get_args

import typer

from fairquant.compress.checkpoints import CHECKPOINT, write_variant
from fairquant.data.prepared import load_prepared
from fairquant.errors import FairquantError
from fairquant.io import atomic_dir, check_outputs, load_checkpoint, write_json
from fairquant.models import build_model, load_audited, load_pretrained
from fairquant.params import ArchName, load_params
from fairquant.training import fit_logged, seed_everything
from stages._cli import run

app = typer.Typer(add_completion=False)


@app.command()
def main(seed: int = typer.Option(..., help="training seed (one of params.yaml's seeds)"),
         data: Path = typer.Option(..., help="prepared data folder"),
         out: Path = typer.Option(..., help="model folder to write"),
         live_dir: Path = typer.Option(..., "--live", help="dvclive folder for training curves"),
         arch: str = typer.Option(None, help="train this architecture instead of model.arch (the sweep)"),
         study_model: Path = typer.Option(None, help="with --arch: the study's fp32 model folder, reused for model.arch"),
         study_live: Path = typer.Option(None, help="with --arch: the study's fp32 training curves, copied with it"),
         params_file: Path = typer.Option(Path("params.yaml"), "--params")) -> None:
    params = load_params(params_file)
    check_outputs(folders={"--out": out, "--live": live_dir})  # before any work
    model_params = params.model
    if arch is None and (study_model is not None or study_live is not None):
        raise FairquantError("--study-model and --study-live go with --arch (the sweep's architecture); without it "
                             "finetune trains model.arch: drop them or add --arch")
    if arch is not None:
        if arch == model_params.arch and study_model is not None:
            return _reuse(study_model, study_live, out, live_dir, arch=arch, seed=seed)
        if arch not in get_args(ArchName):
            raise FairquantError(f"--arch {arch} is not an architecture fairquant builds; use one of "
                                 f"{', '.join(get_args(ArchName))}")
        # model.pretrained holds weights of model.arch: another architecture starts from scratch
        model_params = params.model.model_copy(update={"arch": arch, "pretrained": None})
    table, images, info = load_prepared(data, params, params_file=params_file)
    seed_everything(seed, params.finetune.threads)
    classes = info.get("classes")
    if bool(classes) != (params.data.task == "multiclass"):  # a prepared folder left from another run
        raise FairquantError(f"{data} was prepared for a {'multi-class' if classes else 'binary'} target but data.task "
                             f"is {params.data.task}; re-run prepare with this params file (dvc repro)")
    model = build_model(model_params.arch, small_input_stem=model_params.small_input_stem,
                        image_size=info["image_size"], classes=len(classes) if classes else None)
    config = {"kind": "fp32", "name": "fp32", "arch": model_params.arch,
              "small_input_stem": model_params.small_input_stem, "image_size": info["image_size"],
              "synthetic": info["synthetic"], "target": info["target"], "protected": info["protected"],
              "finetune": params.finetune.model_dump(), "training_seed": seed}
    if classes:
        config["classes"] = classes
    # The model and the curves (or the audit's record) are written to two temporary folders, then moved in place,
    # the curves first: a failure before leaves both as they were. The one window left: a kill between the two
    # renames leaves the new curves beside the previous model (re-running the stage replaces both).
    with atomic_dir(out) as tmp_out, atomic_dir(live_dir) as tmp_live:
        if not params.finetune.epochs:  # audit: the user's model as it is, never trained here
            load_audited(model, model_params.pretrained)
            config.update(trained_here=False, pretrained=str(model_params.pretrained))
            write_json(tmp_live / "metrics.json", {"fine_tuned": False, "audited": str(model_params.pretrained)})
            print(f"audit: {model_params.pretrained} as it is (finetune.epochs 0, not trained here)")
        else:
            if model_params.pretrained:
                skipped = load_pretrained(model, model_params.pretrained)
                print(f"loaded {model_params.pretrained}; freshly initialised: {', '.join(skipped) or 'none'}")
            model = fit_logged(model, table, images, params.data.protected, params.finetune, tmp_live,
                               f"finetune {model_params.arch} (seed {seed})", seed=seed, section="finetune",
                               processes=params.distributed)
        write_variant(tmp_out, model.state_dict(), config)
    print(f"saved {out / CHECKPOINT}")


def _reuse(study_model: Path, study_live: Path | None, out: Path, live_dir: Path, *, arch: str, seed: int) -> None:
    if not (study_model / CHECKPOINT).is_file():
        raise FairquantError(f"{study_model} holds no {CHECKPOINT}; run dvc repro (the finetune stage) first")
    config = load_checkpoint(study_model / CHECKPOINT)["config"]
    found = (config.get("kind"), config.get("arch"), config.get("training_seed"))
    if found != ("fp32", arch, seed):
        raise FairquantError(f"{study_model} holds a {found[0]} {found[1]} model of training seed {found[2]}, not the "
                             f"fp32 {arch} of seed {seed}; point --study-model at data/models/s{seed}/fp32 or re-run "
                             "the finetune stage (dvc repro)")
    sources = [(study_model, out)] + ([] if study_live is None else [(study_live, live_dir)])
    for source, target in sources:  # every check before the first copy: all or nothing
        if not source.is_dir():
            raise FairquantError(f"{source} is not a folder; run dvc repro (the finetune stage) first")
        if target.exists() and not target.is_dir():
            raise FairquantError(f"{target} is a file; the output is a folder: remove the file or choose another path")
    for source, target in sources:
        with atomic_dir(target) as tmp:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
    print(f"the study's own architecture: reused {study_model}")


if __name__ == "__main__":
    run(app)
