"""Summary metrics (means over training seeds), one metrics file per variant for DVC, plot tables, figures,
plots/report.md and plots/report.html."""

from pathlib import Path

import typer

from fairquant.errors import FairquantError
from fairquant.fairness.sweep import TRENDS, check_point, check_trends, sweep_points
from fairquant.io import check_outputs, read_json
from fairquant.mitigate.slots import COMPRESSED, study_slots
from fairquant.results import EvaluationResult, check_verification_metrics
from fairquant.params import SweepParams, load_params
from fairquant.report import write_report
from stages._cli import run

app = typer.Typer(add_completion=False)


def seed_metrics(folder: Path, slots: list[str]) -> dict[str, dict]:
    """One seed's metrics by slot: exactly the ``slots`` params.yaml's mitigate lists make (fp32 first); a file
    missing or one besides them (left from other params, or copied in) is refused, as is one variant in two files."""
    if not (folder / "fp32.json").is_file():
        raise FairquantError(f"{folder} holds no fp32.json; run the evaluate stage for this seed first (dvc repro)")
    found = {path.stem for path in folder.glob("*.json")}
    missing, extra = [s for s in slots if s not in found], sorted(found - set(slots))
    if missing or extra:
        what = f"lacks the metrics of {missing}" if missing else f"holds metrics of {extra}, which params.yaml's " \
            "mitigate lists do not make"
        raise FairquantError(f"{folder} {what}; re-run evaluate for this seed with these params (dvc repro), or "
                             f"remove the stray files")
    metrics = {slot: EvaluationResult.read(folder / f"{slot}.json").to_dict() for slot in slots}
    names: dict[str, str] = {}
    for slot, result in metrics.items():
        if result["variant"] in names:
            raise FairquantError(f"{folder}: {names[result['variant']]}.json and {slot}.json both hold the variant "
                                 f"{result['variant']!r}; one is from another slot: re-run evaluate (dvc repro)")
        names[result["variant"]] = slot
    return metrics


def seed_sweep(folder: Path, sweep: SweepParams) -> dict:
    """One seed's sweep: the metrics of exactly the points ``sweep`` lists, by slot (<arch>/<folder>), and the curves'
    trends; refused when they come from other params or an older evaluation."""
    if not (folder / TRENDS).is_file():
        raise FairquantError(f"{folder} holds no {TRENDS}; run the sweep_evaluate stage for this seed (dvc repro)")
    trends = read_json(folder / TRENDS)
    check_trends(trends, sweep, str(folder / TRENDS))
    wanted = sorted([f"{arch}/fp32" for arch in sweep.architectures] + [p.slot for p in sweep_points(sweep)],
                    key=lambda slot: slot.split("/"))
    missing = [slot for slot in wanted if not (folder / "points" / f"{slot}.json").is_file()]
    if missing:
        raise FairquantError(f"{folder} lacks the metrics of {missing}; re-run the sweep_evaluate stage (dvc repro)")
    points = {}
    for slot in wanted:  # only these: a point file left from other params is not part of this sweep
        path = folder / "points" / f"{slot}.json"
        points[slot] = EvaluationResult.read(path).to_dict()
        check_point(points[slot], slot, str(path))
    return {"points": points, "trends": trends}


def _check_outputs(summary_path: Path, sweep_summary: Path | None, sweep_dir: Path | None,
                   variants_dir: Path | None = None, verify_variants_dir: Path | None = None,
                   verify_path: Path | None = None, prepared: Path | None = None,
                   predictions_dir: Path | None = None) -> None:
    """Refuse before writing anything: a folder where a file goes (or a file where a folder goes), a sweep summary
    without a sweep, verification rows without the verification metrics, or the prepared data without the
    predictions (or the other way round)."""
    if (prepared is None) != (predictions_dir is None):
        raise FairquantError("--data and --predictions go together (the prepared folder and the folder of the "
                             "predictions' s<seed>/): give both, or neither")
    if sweep_summary is not None and sweep_dir is None:
        raise FairquantError("--sweep-summary needs --sweep (the folder of s<seed>/ from the sweep_evaluate stages)")
    if verify_variants_dir is not None and verify_path is None:
        raise FairquantError("--verify-variant-metrics needs --verify (the verification branch's metrics/verify.json)")
    check_outputs(folders={"--variant-metrics": variants_dir, "--verify-variant-metrics": verify_variants_dir})
    for option, path in (("--summary", summary_path), ("--sweep-summary", sweep_summary)):
        if path is not None and path.is_dir():
            raise FairquantError(f"{option} {path} is a folder; the report writes a file there: remove it or choose "
                                 "another path")


def _check_disjoint(inputs: dict[str, Path | None], outputs: dict[str, Path | None]) -> None:
    """No output is, holds or lies inside an input or another output: folders of outputs are replaced whole, so
    `--variant-metrics metrics/eval` once deleted every evaluation, and `--variant-metrics plots` the report."""
    def overlap(a: Path, b: Path) -> bool:
        a, b = a.resolve(), b.resolve()
        return a == b or a in b.parents or b in a.parents

    given_outputs = [(option, path) for option, path in outputs.items() if path is not None]
    for k, (option, path) in enumerate(given_outputs):
        others = [(o, q) for o, q in inputs.items() if q is not None] + given_outputs[k + 1:]
        for other, where in others:
            if overlap(path, where):
                raise FairquantError(f"{option} {path} and {other} {where} are the same path or one holds the other; "
                                     f"the report replaces its outputs whole: give each its own path (dvc.yaml's "
                                     f"report command shows them)")


def _calibration_info(path: Path) -> dict:
    """A calibration set's record, as the report's composition table reads it."""
    info = read_json(path)
    if not isinstance(info, dict) or not isinstance(info.get("set"), str) or not isinstance(info.get("size"), int):
        raise FairquantError(f"{path}: not a calibration set's record (no 'set' name or integer 'size'); the file is "
                             "damaged: re-run the calibration stage (dvc repro -f -s calibration@<seed>)")
    return info


def _exemplars(prepared: Path | None, predictions_dir: Path | None, params, params_file: Path, slots: list[str]):
    """The flipped test images of each compressor (the first training seed's), or None without the folders or with
    report.exemplars_per_group 0."""
    if prepared is None or params.report.exemplars_per_group == 0:
        return None
    from fairquant.data.prepared import load_prepared
    from fairquant.report.exemplars import exemplars_section, read_test_predictions

    samples, images, info = load_prepared(prepared, params, params_file=params_file)
    seed = min(params.seeds)
    shown = [slot for slot in slots if slot == "fp32" or slot in COMPRESSED]
    frames = read_test_predictions(predictions_dir / f"s{seed}", shown, params.mitigate,
                                   protected=list(params.data.protected))
    return exemplars_section(frames, samples, images, info, per_group=params.report.exemplars_per_group, seed=seed)


@app.command()
def main(eval_dir: Path = typer.Option(..., "--eval", help="folder of s<seed>/<slot>.json from the evaluate stages"),
         calibration_dir: Path = typer.Option(None, "--calibration", help="folder of s<seed>/<set>/ calibration sets"),
         verify_path: Path = typer.Option(None, "--verify", help="metrics JSON of the verification branch"),
         sweep_dir: Path = typer.Option(None, "--sweep", help="folder of s<seed>/ from the sweep_evaluate stages"),
         summary_path: Path = typer.Option(..., "--summary"),
         sweep_summary: Path = typer.Option(None, help="compact metrics of the sweep's curves (metrics/sweep.json)"),
         variants_dir: Path = typer.Option(None, "--variant-metrics",
                                           help="folder of one metrics file per variant slot (metrics/variants)"),
         verify_variants_dir: Path = typer.Option(None, "--verify-variant-metrics",
                                                  help="folder of one metrics file per verification variant "
                                                       "(metrics/verify)"),
         plots_dir: Path = typer.Option(..., "--plots"),
         prepared: Path = typer.Option(None, "--data", help="prepared data folder: the flipped test images shown in "
                                                            "report.html (with --predictions)"),
         predictions_dir: Path = typer.Option(None, "--predictions", help="folder of s<seed>/ from the predict "
                                                                        "stages (with --data)"),
         params_file: Path = typer.Option(Path("params.yaml"), "--params")) -> None:
    params = load_params(params_file)
    seeds = params.seeds
    _check_outputs(summary_path, sweep_summary, sweep_dir, variants_dir, verify_variants_dir, verify_path, prepared,
                   predictions_dir)
    _check_disjoint(
        inputs={"--eval": eval_dir, "--calibration": calibration_dir, "--verify": verify_path, "--sweep": sweep_dir,
                "--data": prepared, "--predictions": predictions_dir, "--params": params_file},
        outputs={"--summary": summary_path, "--sweep-summary": sweep_summary, "--plots": plots_dir,
                 "--variant-metrics": variants_dir, "--verify-variant-metrics": verify_variants_dir})
    if plots_dir.exists() and not plots_dir.is_dir():
        raise FairquantError(f"--plots {plots_dir} is a file; the report writes a folder there: remove it or choose "
                             "another path")
    # Only the seeds params.yaml lists: folders of seeds removed since are stale, not part of this study.
    slots = sorted(study_slots(params.mitigate), key=lambda slot: (slot != "fp32", slot))  # fp32, then by name
    per_seed = {seed: seed_metrics(eval_dir / f"s{seed}", slots) for seed in seeds}
    sets = {}
    if calibration_dir is not None:
        first = calibration_dir / f"s{min(seeds)}"
        sets = {info["set"]: info for info in (_calibration_info(p) for p in sorted(first.glob("*/info.json")))}
    verify = read_json(verify_path) if verify_path is not None else None
    if verify is not None:
        check_verification_metrics(verify, str(verify_path))
    exemplars = _exemplars(prepared, predictions_dir, params, params_file, slots)
    sweep = {seed: seed_sweep(sweep_dir / f"s{seed}", params.sweep) for seed in seeds} if sweep_dir is not None else None
    write_report(per_seed, summary_path=summary_path, plots_dir=plots_dir, calibration_sets=sets, verify=verify,
                 sweep=sweep, sweep_summary_path=sweep_summary, variants_dir=variants_dir,
                 verify_variants_dir=verify_variants_dir, exemplars=exemplars)
    print(f"wrote {summary_path}, {plots_dir / 'report.md'} and {plots_dir / 'report.html'} ({len(seeds)} training "
          "seed(s))")


if __name__ == "__main__":
    run(app)
