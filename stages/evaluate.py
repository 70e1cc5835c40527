"""Fairness metrics of every variant on the test split, with CIs and paired changes vs fp32."""

from pathlib import Path

import typer

from fairquant.data.prepared import read_prepared_samples
from fairquant.errors import FairquantError
from fairquant.fairness.evaluation import check_against_prepared, check_same_classes, classes_of, evaluate_variant
from fairquant.io import check_outputs, read_json, read_table
from fairquant.mitigate.slots import check_slot_holds, study_model_names
from fairquant.params import load_params
from fairquant.results import PredictionsInfo, check_predictions
from stages._cli import run

app = typer.Typer(add_completion=False)


def study_folders(root: Path, params) -> tuple[list[Path], dict[str, str | None], dict[str, dict]]:
    """The prediction folders of every slot the study makes (params.yaml's mitigate lists), fp32 first; each slot's
    baseline; and the timed slots' latency (the latency stage's file)."""
    from fairquant.mitigate.slots import LATENCY, TIMED, predictions_folder, study_slots

    slots = study_slots(params.mitigate)
    folders = [predictions_folder(root, slot, params.mitigate) for slot in slots]
    missing = [folder.name for folder in folders if not (folder / "test.parquet").is_file()]
    if missing:
        raise FairquantError(f"{root} lacks predictions of {missing}; run dvc repro (the predict and mitigate stages)")
    latency = read_json(root / LATENCY)
    if not isinstance(latency, dict) or set(latency) != set(TIMED) or not all(
            isinstance(timing, dict) for timing in latency.values()):
        raise FairquantError(f"{root / LATENCY}: expected the timings of {list(TIMED)}; re-run the latency stage")
    return folders, slots, latency


@app.command()
def main(predictions: list[Path] = typer.Argument(..., help="prediction folders, the first one fp32; or one seed's "
                                                             "predictions folder (variants/ and postprocessed/)"),
         out_dir: Path = typer.Option(..., "--out", help="folder for one training seed's <slot>.json files"),
         data: Path = typer.Option(None, help="prepared data folder: fp32's predictions must cover its test split "
                                              "row for row"),
         params_file: Path = typer.Option(Path("params.yaml"), "--params")) -> None:
    params = load_params(params_file)
    check_outputs(folders={"--out": out_dir})  # before any work
    baselines: dict[str, str | None] = {}
    latency: dict[str, dict] = {}
    if len(predictions) == 1 and not (predictions[0] / "test.parquet").is_file():
        predictions, baselines, latency = study_folders(predictions[0], params)
    reference = read_table(predictions[0] / "test.parquet")
    frames = {folder.name: read_table(folder / "test.parquet") for folder in predictions}
    infos = {folder.name: PredictionsInfo.read(folder) for folder in predictions}
    if baselines:  # the study's folders: each holds what params.yaml says its slot holds
        names = study_model_names(params)
        for folder in predictions:
            check_slot_holds(folder.name, infos[folder.name].name, names=names, where=str(folder))
    check_same_classes(infos)  # the first folder is fp32
    for folder in predictions:  # every table checked before any metric: a damaged one is refused, never measured
        check_predictions(frames[folder.name], source=str(folder / "test.parquet"), protected=params.data.protected,
                          classes=classes_of(infos[folder.name]), post_processed=infos[folder.name].post_processed)
    if data is not None:
        check_against_prepared(reference, read_prepared_samples(data, params, params_file=params_file),
                               params.data.protected,
                               name=predictions[0].name, source=str(data / "samples.parquet"))
    results = {}
    for folder in predictions:  # compute everything first: no metrics file is written if one variant fails
        info = infos[folder.name]
        if folder.name in latency:  # timed apart from prediction (the latency stage)
            info = PredictionsInfo.from_dict({**info.to_dict(), "latency": latency[folder.name]},
                                             source=f"the latency stage's timing of {folder.name}")
        base = baselines.get(folder.name)
        results[folder.name] = evaluate_variant(frames[folder.name], reference, info, params.data.protected,
                                                params.evaluate, baseline=(base, frames[base]) if base else None)
    for slot, result in results.items():
        result.write(out_dir / f"{slot}.json")
        gap = "accuracy_gap" if result.metrics.get("class_as_group") else "eq_odds"  # eq_odds is degenerate there
        estimate = result.metrics["gaps"][gap]
        print(f"{result.variant}: accuracy {result.metrics['overall']['accuracy']:.3f}, {gap} "
              f"{_number(estimate['value'])} [{_number(estimate['ci_low'])}, {_number(estimate['ci_high'])}]")


def _number(value) -> str:
    return "undefined" if value is None or value != value else f"{value:.3f}"


if __name__ == "__main__":
    run(app)
