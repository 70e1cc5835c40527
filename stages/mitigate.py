"""Run one remedy (params.yaml's mitigate.<method>): before, during or after compression, or a precision plan."""

import os
from pathlib import Path
from typing import Optional

import typer

from fairquant.distributed import under_launcher
from fairquant.errors import FairquantError
from fairquant.io import check_outputs
from fairquant.params import REMEDY_PARAMS, QuantizeQATParams, TrainingParams, load_params
from stages._cli import run

app = typer.Typer(add_completion=False)
NEEDS = {"before": ("seed", "data", "model", "live"), "during": ("seed", "data", "model", "live", "compressor"),
         "after": ("predictions", "data"), "precision": ("seed", "data", "model", "calibration")}


@app.command()
def main(method: str = typer.Option(..., help="a remedy: " + ", ".join(remedy.method for remedy in REMEDY_PARAMS)),
         out: Path = typer.Option(..., help="model folder (or predictions folder, for a post-processor) to write"),
         seed: Optional[int] = typer.Option(None, help="training seed of the fp32 model"),
         data: Optional[Path] = typer.Option(None, help="prepared data folder"),
         model_dir: Optional[Path] = typer.Option(None, "--model", help="fp32 model folder"),
         compressor: Optional[str] = typer.Option(None, help="during compression: prune, qat or kmeans"),
         calibration_dir: Optional[Path] = typer.Option(None, "--calibration", help="calibration set folder"),
         predictions: Optional[Path] = typer.Option(None, help="after: the predictions folder of the variant to fix"),
         live_dir: Optional[Path] = typer.Option(None, "--live", help="dvclive folder for training curves"),
         control: bool = typer.Option(False, "--control", help="before compression: the same fine-tuning without "
                                                                "the remedy (the baseline it is compared with)"),
         params_file: Path = typer.Option(Path("params.yaml"), "--params")) -> None:
    from fairquant.mitigate.remedies import family

    params = load_params(params_file)
    check_outputs(folders={"--out": out, "--live": live_dir})  # before any work
    kind = family(method)
    if under_launcher() and kind not in ("before", "during"):  # its ranks would each run it whole
        where = "a precision plan" if kind == "precision" else f"{kind} compression"
        raise FairquantError(f"{method} ({where}) trains nothing and runs on one process, but WORLD_SIZE is "
                             f"{os.environ['WORLD_SIZE']} (torchrun or a job launcher set it); run it without the "
                             "launcher (only the remedies before and during compression train on several)")
    given = {"seed": seed, "data": data, "model": model_dir, "compressor": compressor, "calibration": calibration_dir,
             "predictions": predictions, "live": live_dir}
    if control and kind != "before":
        raise FairquantError(f"--control is the baseline of a remedy before compression; {method} is {kind} compression")
    missing = [f"--{name}" for name in NEEDS[kind] if given[name] is None]
    quantizer = isinstance(params.compressors().get(compressor), QuantizeQATParams)
    if kind == "during" and quantizer and calibration_dir is None:
        missing.append("--calibration")  # QAT's initial activation ranges come from a calibration set
    if missing:
        where = "a precision plan" if kind == "precision" else f"{kind} compression"
        raise FairquantError(f"{method} ({where}) needs {' '.join(missing)}")
    config = getattr(params.mitigate, method)  # the remedy's section, named by its method
    if kind == "after":
        _after(config, predictions, out, params, data, params_file=params_file)
    elif kind == "precision":
        _precision(config, seed, data, model_dir, calibration_dir, out, params, params_file=params_file)
    else:
        from fairquant.io import atomic_dir

        with atomic_dir(live_dir) as tmp_live:  # the curves replace --live only once the model is saved
            _train(config, kind, seed, data, model_dir, compressor, calibration_dir, out, tmp_live, params, control,
                   params_file=params_file)


def _train(config, kind, seed, data, model_dir, compressor, calibration_dir, out, live_dir, params,
           control: bool = False, *, params_file: Path) -> None:
    from fairquant.compress import calibration, fakequant
    from fairquant.compress.checkpoints import base_config, load_fp32, save_variant
    from fairquant.data.prepared import check_prepared
    from fairquant.mitigate.remedies import mitigate
    from fairquant.training import derived_seed, seed_everything

    method = config.method
    trainable = {name: section for name, section in params.compressors().items()
                 if isinstance(section, TrainingParams)}
    if kind == "during" and compressor not in trainable:
        raise FairquantError(f"--compressor {compressor!r}: {method} runs during prune, qat or kmeans")
    section = trainable[compressor] if kind == "during" else config
    run_seed = derived_seed(seed, section.seed)  # during: the compressor's own, so the data order is the same
    seed_everything(run_seed, section.threads)
    model, fp32_config = load_fp32(model_dir, params=params, params_file=params_file)
    if fp32_config.get("mitigation"):
        raise FairquantError(f"{model_dir} was already fine-tuned by {fp32_config['mitigation']['method']}; "
                             f"start {method} from the plain fp32 model")
    protected = params.data.protected
    if kind == "before":
        check_prepared(data, params, params_file=params_file)  # before any training
        tuned, record = mitigate(config, model=model, data=data, protected=protected, live_dir=live_dir,
                                 seed=run_seed, control=control, processes=params.distributed)
        config_out = {**fp32_config, "name": record["method"], "mitigation": record}
        save_variant(out, tuned.state_dict(), config_out)
        print(f"{record['method']}: fine-tuned the fp32 model (seed {seed}); multipliers {record.get('multipliers', '-')}")
        return
    images = None
    extra = {}
    if isinstance(section, QuantizeQATParams):
        fakequant.check_layer_names(model, section.layers, f"{section.params_section}.layers")  # before any work
        images, set_info = calibration.load_set(calibration_dir, section.calibration_size,
                                                f"{section.params_section}.calibration_size",
                                                derived_seed(seed, section.seed), image_size=fp32_config["image_size"])
        extra["calibration"] = {"set": set_info["set"], "size": len(images)}
    check_prepared(data, params, params_file=params_file)  # before any training
    module, recorded = mitigate(config, model=model, data=data, protected=protected, compressor_params=section,
                                calibration_images=images, live_dir=live_dir, seed=run_seed,
                                processes=params.distributed)
    name = f"{method}+{section.variant_name()}"
    config_out = base_config(fp32_config, name=name, **extra, **recorded)
    save_variant(out, module.state_dict(), config_out)
    held = {split: report["holds"] for split, report in recorded["mitigation"]["constraint"].items()}
    print(f"{name}: constraint holds on {held}; kept step {recorded['mitigation'].get('kept_step')}")


def _after(config, predictions, out, params, data: Path, *, params_file: Path) -> None:
    """A post-processor fitted on the variant's validation predictions, applied to its test predictions; both are
    checked against the prepared splits (``data``) first: fitted on the validation split, never on test."""
    from dataclasses import replace

    from fairquant.data.prepared import read_prepared_samples
    from fairquant.fairness.evaluation import check_against_prepared
    from fairquant.io import atomic_dir, predictions_schema, read_table, write_table
    from fairquant.mitigate.remedies import mitigate
    from fairquant.mitigate.slots import study_slots
    from fairquant.results import PredictionsInfo, check_predictions

    method = config.method
    study_slots(params.mitigate)  # a post_on name the study does not make: one line naming the choices
    for name in ("val.parquet", "test.parquet", "info.json"):
        if not (predictions / name).is_file():
            raise FairquantError(f"{predictions / name} is missing; run the predict stage of that variant first")
    info = PredictionsInfo.read(predictions)
    if (info.mitigation or {}).get("family") == "post-processing":
        raise FairquantError(f"{predictions} is already post-processed; apply {method} to an unprocessed variant")
    classes = info.details.get("classes")
    if classes:  # the post-processors fit one threshold per group on a binary score
        raise FairquantError(f"{method} post-processes binary predictions but {predictions} holds {len(classes)}-class "
                             "predictions; leave mitigate.after empty for a multi-class target (its remedies run "
                             "during compression: mitigate.during_*)")
    samples = read_prepared_samples(data, params, params_file=params_file)  # before reading any prediction
    for split in ("val", "test"):  # fitted on val, applied to test: neither may be empty
        if not (samples["split"] == split).any():
            raise FairquantError(f"{data / 'samples.parquet'} holds no {split} rows; {method} is fitted on the "
                                 f"validation split and applied to the test split: re-run prepare (dvc repro prepare)")
    protected = params.data.protected
    frames = {split: read_table(predictions / f"{split}.parquet") for split in ("val", "test")}
    for split, frame in frames.items():  # a damaged table is refused, never fitted on
        check_predictions(frame, source=str(predictions / f"{split}.parquet"), protected=protected,
                          classes=info.details.get("classes"))
    shared = set(frames["val"]["sample_id"].astype(str)) & set(frames["test"]["sample_id"].astype(str))
    if shared:  # fitted on test rows, it would be measured on the rows it was fitted to
        raise FairquantError(f"{predictions}: val.parquet and test.parquet share {len(shared)} sample ids (e.g. "
                             f"{sorted(shared)[0]!r}); {method} is fitted on validation rows only: re-run predict "
                             "(dvc repro)")
    for split, frame in frames.items():
        check_against_prepared(frame, samples, protected, name=info.name, source=str(data / "samples.parquet"),
                               split=split)
    val, test, details = mitigate(config, val=frames["val"], test=frames["test"], protected=protected)
    name = f"{info.name}+{method}"
    schema = predictions_schema(protected).with_metadata(
        {"fairquant.variant": name, "fairquant.synthetic": str(info.synthetic).lower()})
    with atomic_dir(out) as tmp:
        write_table(tmp / "val.parquet", val, schema)
        write_table(tmp / "test.parquet", test, schema)
        # the model is the variant's own; a post-processor adds a per-group lookup, not a speed claim
        replace(info, name=name, latency={}, details={**info.details, "mitigation": details}).write(tmp)
    print(f"{name}: fitted on validation; collapsed groups: {details.get('collapsed') or 'none'}")


def _precision(config, seed, data, model_dir, calibration_dir, out, params, *, params_file: Path) -> None:
    from fairquant.compress import calibration
    from fairquant.compress.checkpoints import base_config, load_fp32, save_variant
    from fairquant.data.prepared import load_prepared
    from fairquant.fairness.metrics import group_labels
    from fairquant.io import read_rows
    from fairquant.mitigate.remedies import mitigate
    from fairquant.models import scoring_device
    from fairquant.training import derived_seed

    device = scoring_device(params.evaluate.device)  # the sensitivity's validation scoring
    model, fp32_config = load_fp32(model_dir, params=params, params_file=params_file)
    images, set_info = calibration.load_set(calibration_dir, config.calibration_size,
                                            "mitigate.sensitivity.calibration_size", derived_seed(seed, 0),
                                            image_size=fp32_config["image_size"])
    table, store, _ = load_prepared(data, params, params_file=params_file)
    val = table[table["split"] == "val"]
    module, recorded = mitigate(config, model=model, scheme_base=params.quantize_ptq.scheme(),
                                calibration_images=images, val_images=read_rows(store, val["row"].to_numpy()),
                                val_labels=val["y_true"].to_numpy(), val_groups=group_labels(val, params.data.protected),
                                device=device)
    name = f"sensitivity+ptq-w{config.bits}-keep{len(recorded['mitigation']['plan']['kept'])}"
    config_out = base_config(fp32_config, name=name, calibration={"set": set_info["set"], "size": len(images)},
                             **recorded)
    save_variant(out, module.state_dict(), config_out)
    plan = recorded["mitigation"]["plan"]
    print(f"{name}: kept {plan['kept'] or 'no layer'} at {config.high_bits or 'float'} bits; "
          f"{plan['size_bytes'] / 1e6:.2f} MB (all at {config.bits} bits: {plan['fully_quantized_size_bytes'] / 1e6:.2f} MB); "
          f"the plan's layers map is in {out / 'info.json'} (mitigation.plan.layers)")


if __name__ == "__main__":
    run(app)
