"""The sweep of one training seed: every point's metrics against its architecture's fp32 and each curve's trend."""

from pathlib import Path

import typer

from fairquant.errors import FairquantError
from fairquant.fairness.sweep import TRENDS, check_same_rows, evaluate_sweep
from fairquant.io import atomic_dir, check_outputs, read_table, write_json
from fairquant.mitigate.slots import sweep_slots
from fairquant.params import load_params
from fairquant.fairness.evaluation import classes_of
from fairquant.results import PredictionsInfo, check_predictions
from stages._cli import run

app = typer.Typer(add_completion=False)


@app.command()
def main(predictions: Path = typer.Option(..., help="one seed's sweep predictions (data/sweep/s<seed>/predictions)"),
         out_dir: Path = typer.Option(..., "--out", help="folder to write: points/<arch>/<point>.json and trends.json"),
         params_file: Path = typer.Option(Path("params.yaml"), "--params")) -> None:
    params = load_params(params_file)
    check_outputs(folders={"--out": out_dir})  # before any work
    slots = sweep_slots(params.sweep)
    if not slots:
        raise FairquantError("the sweep lists no points (params.yaml sweep); nothing to evaluate")
    missing = [slot for slot in slots if not (predictions / slot / "test.parquet").is_file()]
    if missing:
        raise FairquantError(f"{predictions} lacks predictions of {missing}; run dvc repro (the sweep stages)")
    frames = {slot: read_table(predictions / slot / "test.parquet") for slot in slots}
    infos = {slot: PredictionsInfo.read(predictions / slot) for slot in slots}
    for slot in slots:  # every table checked before any metric (and before rows are compared: sample_id is there)
        check_predictions(frames[slot], source=str(predictions / slot / "test.parquet"),
                          protected=params.data.protected, classes=classes_of(infos[slot]))
    check_same_rows(frames)
    results, trends = evaluate_sweep(frames, infos, params.sweep, params.data.protected, params.evaluate)
    with atomic_dir(out_dir) as tmp:  # every file or none
        for slot, result in results.items():
            result.write(tmp / "points" / f"{slot}.json")
        write_json(tmp / TRENDS, trends)
    for curve in trends["curves"]:
        changes = curve["trend"]["gap_changes"]
        gap = "tpr_gap" if "tpr_gap" in changes else "accuracy_gap"  # a multi-class curve: the accuracy gap
        answer = changes[gap]
        print(f"{curve['arch']} {curve['series']} ({curve['calibration'] or 'no calibration set'}): {gap} change "
              f"{answer['verdict']} as compression deepens, slope {_signed(answer['slope'])} "
              f"[{_signed(answer['ci_low'])}, {_signed(answer['ci_high'])}] {curve['trend']['depth']}")


def _signed(value) -> str:
    return "undefined" if value is None or value != value else f"{value:+.4f}"


if __name__ == "__main__":
    run(app)
