"""Write the embedded default dataset (CelebA layout) when data.source is 'synthetic'."""

from pathlib import Path

import typer

from fairquant.data.synthetic import generate_celeba_like
from fairquant.io import atomic_dir
from fairquant.params import load_params
from stages._cli import run

app = typer.Typer(add_completion=False)


@app.command()
def main(out: Path = typer.Option(..., help="dataset folder to write"),
         params_file: Path = typer.Option(Path("params.yaml"), "--params")) -> None:
    params = load_params(params_file)
    if params.data.source != "synthetic":
        with atomic_dir(out) as tmp:  # keep the stage's output defined, but spend no time on unused data
            (tmp / "README.txt").write_text(f"Not generated: data.source is '{params.data.source}'.\n")
        print(f"skipped: data.source is '{params.data.source}', not 'synthetic'")
        return
    summary = generate_celeba_like(params.generate, out)
    print(f"generated {summary['images']} SYNTHETIC images ({summary['minority_images']} minority) in {out}")


if __name__ == "__main__":
    run(app)
