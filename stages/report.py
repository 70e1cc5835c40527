"""Summary metrics for DVC, plot tables, figures and plots/report.md from the evaluate stage's metrics."""

from pathlib import Path

import typer

from fairquant.io import read_json
from fairquant.report import write_report
from stages._cli import run

app = typer.Typer(add_completion=False)


@app.command()
def main(metrics: list[Path] = typer.Argument(..., help="metrics/<variant>.json files, fp32 first"),
         calibration_dir: Path = typer.Option(None, "--calibration", help="folder of the calibration sets"),
         summary_path: Path = typer.Option(..., "--summary"),
         plots_dir: Path = typer.Option(..., "--plots")) -> None:
    results = {path.stem: read_json(path) for path in metrics}
    sets = {}
    if calibration_dir is not None:
        sets = {info["set"]: info for info in (read_json(p) for p in sorted(calibration_dir.glob("*/info.json")))}
    write_report(results, summary_path, plots_dir, sets)
    print(f"wrote {summary_path} and {plots_dir / 'report.md'}")


if __name__ == "__main__":
    run(app)
