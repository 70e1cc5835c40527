"""Predict the val and test splits with every model of one training seed (fp32 and each compressed or remedied
variant: the study's model slots); the plain fp32 and int8 PTQ models are also timed."""

from pathlib import Path

import typer

from fairquant.data.prepare import load_prepared
from fairquant.errors import FairquantError
from fairquant.io import ImageRows, atomic_dir, predictions_schema, write_json, write_table
from fairquant.mitigate.slots import TIMED, model_slots
from fairquant.params import load_params
from fairquant.compress.variants import load_variant
from stages._cli import run

app = typer.Typer(add_completion=False)
DETAILS = ("calibration", "scheme", "layers", "clusters", "sparsity", "training", "fp32_size_bytes", "int8_check", "mitigation",
           "training_seed")


@app.command()
def main(data: Path = typer.Option(..., help="prepared data folder"),
         models: Path = typer.Option(..., help="one training seed's model folder, a subfolder per slot"),
         out: Path = typer.Option(..., help="predictions folder to write, a subfolder per slot"),
         params_file: Path = typer.Option(Path("params.yaml"), "--params")) -> None:
    params = load_params(params_file)
    slots = model_slots(params.mitigate)
    missing = [slot for slot in slots if not (models / slot).is_dir()]
    if missing:
        raise FairquantError(f"{models} lacks the models of {missing}; run dvc repro (the compressor and mitigate stages)")
    table, images, info = load_prepared(data)
    with atomic_dir(out) as tmp:  # every slot or none
        for slot in slots:
            predict_variant(models / slot, tmp / slot, table, images, info, params, timed=slot in TIMED)


def predict_variant(model_dir: Path, out: Path, table, images, info: dict, params, *, timed: bool) -> None:
    variant = load_variant(model_dir, batch_size=params.evaluate.batch_size,
                           repeats=params.latency.repeats, latency_batch=params.latency.batch)
    protected = params.data.protected
    schema = predictions_schema(protected).with_metadata(
        {"fairquant.variant": variant.name, "fairquant.synthetic": str(info["synthetic"]).lower()})
    out.mkdir(parents=True)
    for split in ("val", "test"):
        part = table[table["split"] == split].reset_index(drop=True)
        scores = variant.score(ImageRows(images, part["row"].to_numpy()))  # read batch by batch
        frame = part[["sample_id", "y_true", *protected]].copy()
        frame["y_score"] = scores.astype("float32")
        frame["y_pred"] = (scores > 0.5).astype("int8")
        write_table(out / f"{split}.parquet", frame, schema)
    latency = variant.latency() if timed and params.latency.repeats else {}
    write_json(out / "info.json", {"name": variant.name, "kind": variant.kind, "kernels": variant.kernels,
                                   "details": {k: v for k, v in variant.config.items() if k in DETAILS},
                                   "size_bytes": variant.size_bytes,
                                   "latency": latency, "synthetic": info["synthetic"]})
    timing = ", ".join(f"{mode} {v['median_ms']:.1f} ms/batch of {v['batch_size']}" for mode, v in latency.items())
    print(f"{variant.name}: predicted val and test; {timing or variant.kernels + ' (no latency measured)'}")


if __name__ == "__main__":
    run(app)
