"""Predict the val and test splits with every model of one training seed (fp32 and each compressed or remedied
variant: the study's model slots). Nothing here is timed (the latency stage is), so a re-run writes the same bytes for
every unchanged model and nothing downstream of those re-runs. With ``--sweep`` it predicts the sweep's models
instead: every architecture's fp32 and each of its points (``<arch>/<point folder>``)."""

from functools import partial
from pathlib import Path

import numpy as np
import typer

from fairquant.data.prepared import load_prepared
from fairquant.errors import FairquantError
from fairquant.compress.checkpoints import CHECKPOINT
from fairquant.io import ImageRows, atomic_dir, check_outputs, predictions_schema, write_table
from fairquant.mitigate.slots import (check_slot_holds, model_slots, study_model_names, sweep_model_names,
                                      sweep_slots)
from fairquant.models import scoring_device
from fairquant.params import load_params
from fairquant.results import PredictionsInfo
from fairquant.training import labels_from_scores
from fairquant.compress.variants import load_variant
from stages._cli import run

app = typer.Typer(add_completion=False)


@app.command()
def main(data: Path = typer.Option(..., help="prepared data folder"),
         models: Path = typer.Option(..., help="one training seed's model folder, a subfolder per slot"),
         out: Path = typer.Option(..., help="predictions folder to write, a subfolder per slot"),
         sweep: bool = typer.Option(False, help="predict the sweep's models (data/sweep/s<seed>/models)"),
         params_file: Path = typer.Option(Path("params.yaml"), "--params")) -> None:
    params = load_params(params_file)
    check_outputs(folders={"--out": out})  # before any work
    device = scoring_device(params.evaluate.device)
    slots = sweep_slots(params.sweep) if sweep else list(model_slots(params.mitigate))
    missing = [slot for slot in slots if not (models / slot / CHECKPOINT).is_file()]
    if missing:
        raise FairquantError(f"{models} lacks the models of {missing}; run dvc repro (the compressor, mitigate and "
                             "sweep stages)")
    table, images, info = load_prepared(data, params, params_file=params_file)
    protected = params.data.protected
    absent = [name for name in ("sample_id", "split", "y_true", "row", *protected) if name not in table.columns]
    if absent or "synthetic" not in info:
        raise FairquantError(f"{data} lacks {absent or 'synthetic in info.json'} (data.protected: {protected}); "
                             "re-run prepare with these params (dvc repro)")
    expected = sweep_model_names(params) if sweep else {}
    names = {} if sweep else study_model_names(params)
    with atomic_dir(out) as tmp:  # every slot or none
        for slot in slots:
            check_name = partial(check_slot_holds, slot, names=names, where=str(models / slot)) if names else None
            predict_variant(models / slot, tmp / slot, table, images, info, params, expected=expected.get(slot),
                            check_name=check_name, device=device)


def predict_variant(model_dir: Path, out: Path, table, images, info: dict, params, *,
                    expected: tuple[str, str] | None = None, check_name=None, device="cpu") -> None:
    """Predict val and test with the model in ``model_dir``; ``expected``: the (arch, name) it must record (the
    sweep's folders are named by params, so a model copied or left there from other params is refused);
    ``check_name``: called with the name the model records, refuses one that is not its study slot's; ``device``:
    where a float model scores (real int8 stays on the CPU); the info's ``details.device`` records which did."""
    variant = load_variant(model_dir, batch_size=params.evaluate.batch_size, repeats=0, latency_batch=0,
                           device=device)
    if check_name is not None:
        check_name(variant.name)
    found = (variant.config.get("arch"), variant.name)
    if expected is not None and found != expected:
        raise FairquantError(f"{model_dir} holds the {found[0]} model {found[1]}, not {expected[1]} of {expected[0]} "
                             "as params.yaml's sweep names it; re-run its sweep stage (dvc repro)")
    classes = info.get("classes")
    if variant.config.get("classes") != classes:
        have = f"{len(variant.config['classes'])} classes" if variant.config.get("classes") else "a binary target"
        want = f"{len(classes)} classes" if classes else "a binary target"
        raise FairquantError(f"{model_dir} holds a model of {have} but the prepared data has {want}; re-run "
                             "prepare and the model's stages with one params.yaml (dvc repro)")
    if variant.config.get("image_size", info["image_size"]) != info["image_size"]:
        raise FairquantError(f"{model_dir} holds a model of {variant.config['image_size']} px images but {info['image_size']} "
                             "px data; re-run prepare and the model's stages with one params.yaml (dvc repro)")
    protected = params.data.protected
    schema = predictions_schema(protected, classes).with_metadata(
        {"fairquant.variant": variant.name, "fairquant.synthetic": str(info["synthetic"]).lower()})
    out.mkdir(parents=True)
    for split in ("val", "test"):
        part = table[table["split"] == split].reset_index(drop=True)
        scores = variant.score(ImageRows(images, part["row"].to_numpy()))  # read batch by batch
        frame = part[["sample_id", "y_true", *protected]].copy()
        frame["y_pred"] = labels_from_scores(scores)
        if scores.ndim == 1:
            frame["y_score"] = scores.astype("float32")
        else:  # the predicted class's probability, and every class's
            frame["y_score"] = scores[np.arange(len(scores)), frame["y_pred"].to_numpy()].astype("float32")
            frame["y_prob"] = list(scores.astype("float32"))
        write_table(out / f"{split}.parquet", frame, schema)
    PredictionsInfo(name=variant.name, kind=variant.kind, kernels=variant.kernels,
                    details={**variant.details, "device": variant.device.type},
                    size_bytes=variant.size_bytes, synthetic=info["synthetic"]).write(out)
    print(f"{variant.name}: predicted val and test ({variant.kernels}, on {variant.device.type})")


if __name__ == "__main__":
    run(app)
