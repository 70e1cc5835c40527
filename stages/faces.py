"""Write the default synthetic calibration folder: unlabelled generated faces (a stand-in for StyleGAN samples)."""

from pathlib import Path

import typer

from fairquant.data.synthetic import generate_unlabelled_faces
from fairquant.io import check_outputs
from fairquant.params import load_params
from stages._cli import run

app = typer.Typer(add_completion=False)


@app.command()
def main(out: Path = typer.Option(..., help="folder of faces to write"),
         params_file: Path = typer.Option(Path("params.yaml"), "--params")) -> None:
    params = load_params(params_file)
    check_outputs(folders={"--out": out})  # before any work
    summary = generate_unlabelled_faces(params.generate, params.faces, out)
    print(f"generated {summary['images']} SYNTHETIC unlabelled faces ({summary['minority_images']} minority) in {out}")


if __name__ == "__main__":
    run(app)
