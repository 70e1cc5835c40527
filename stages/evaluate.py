"""Fairness metrics of every variant on the test split, with CIs and paired changes vs fp32."""

from pathlib import Path

import typer

from fairquant.fairness.evaluation import evaluate_variant
from fairquant.io import read_json, read_table, write_json
from fairquant.params import load_params
from stages._cli import run

app = typer.Typer(add_completion=False)


@app.command()
def main(predictions: list[Path] = typer.Argument(..., help="prediction folders, the first one fp32"),
         out_dir: Path = typer.Option(..., "--out", help="folder for one training seed's <slot>.json files"),
         params_file: Path = typer.Option(Path("params.yaml"), "--params")) -> None:
    params = load_params(params_file)
    reference = read_table(predictions[0] / "test.parquet")
    results = {}
    for folder in predictions:  # compute everything first: no metrics file is written if one variant fails
        info = read_json(folder / "info.json")
        results[folder.name] = evaluate_variant(read_table(folder / "test.parquet"), reference, info,
                                                params.data.protected, params.evaluate)
    for slot, result in results.items():
        write_json(out_dir / f"{slot}.json", result)
        gaps = result["gaps"]
        print(f"{result['variant']}: accuracy {result['overall']['accuracy']:.3f}, "
              f"EO {gaps['eq_odds']['value']:.3f} [{gaps['eq_odds']['ci_low']:.3f}, {gaps['eq_odds']['ci_high']:.3f}]")


if __name__ == "__main__":
    run(app)
