"""Summary metrics for DVC (means over training seeds), plot tables, figures and plots/report.md."""

from pathlib import Path

import typer

from fairquant.errors import FairquantError
from fairquant.io import read_json
from fairquant.results import EvaluationResult
from fairquant.params import load_params
from fairquant.report import write_report
from stages._cli import run

app = typer.Typer(add_completion=False)


def seed_metrics(folder: Path) -> dict[str, dict]:
    """One seed's metrics by slot, fp32 first."""
    files = sorted(folder.glob("*.json"), key=lambda p: (p.stem != "fp32", p.stem))
    if not files or files[0].stem != "fp32":
        raise FairquantError(f"{folder} holds no fp32.json; run the evaluate stage for this seed first (dvc repro)")
    return {path.stem: EvaluationResult.read(path).to_dict() for path in files}


@app.command()
def main(eval_dir: Path = typer.Option(..., "--eval", help="folder of s<seed>/<slot>.json from the evaluate stages"),
         calibration_dir: Path = typer.Option(None, "--calibration", help="folder of s<seed>/<set>/ calibration sets"),
         verify_path: Path = typer.Option(None, "--verify", help="metrics JSON of the verification branch"),
         summary_path: Path = typer.Option(..., "--summary"),
         plots_dir: Path = typer.Option(..., "--plots"),
         params_file: Path = typer.Option(Path("params.yaml"), "--params")) -> None:
    seeds = load_params(params_file).seeds
    if plots_dir.exists() and not plots_dir.is_dir():
        raise FairquantError(f"--plots {plots_dir} is a file; the report writes a folder there: remove it or choose "
                             "another path")
    # Only the seeds params.yaml lists: folders of seeds removed since are stale, not part of this study.
    per_seed = {seed: seed_metrics(eval_dir / f"s{seed}") for seed in seeds}
    slots = [list(m) for m in per_seed.values()]
    if any(s != slots[0] for s in slots):
        raise FairquantError(f"training seeds have different variants ({slots}); run dvc repro to evaluate every seed")
    sets = {}
    if calibration_dir is not None:
        first = calibration_dir / f"s{min(seeds)}"
        sets = {info["set"]: info for info in (read_json(p) for p in sorted(first.glob("*/info.json")))}
    verify = read_json(verify_path) if verify_path is not None else None
    write_report(per_seed, summary_path=summary_path, plots_dir=plots_dir, calibration_sets=sets, verify=verify)
    print(f"wrote {summary_path} and {plots_dir / 'report.md'} ({len(seeds)} training seed(s))")


if __name__ == "__main__":
    run(app)
