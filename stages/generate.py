"""Write the embedded default dataset: the CelebA layout when data.source is 'synthetic', or, with
generate.layout: folder and data.source: folder, its multi-class twin as a labelled image folder."""

from pathlib import Path

import typer

from fairquant.data.synthetic import generate_celeba_like, generate_folder_like
from fairquant.io import atomic_dir, check_outputs
from fairquant.params import load_params
from stages._cli import run

app = typer.Typer(add_completion=False)


@app.command()
def main(out: Path = typer.Option(..., help="dataset folder to write"),
         params_file: Path = typer.Option(Path("params.yaml"), "--params")) -> None:
    params = load_params(params_file)
    check_outputs(folders={"--out": out})  # before any work
    layout, source = params.generate.layout, params.data.source
    wanted = {"celeba": "synthetic", "folder": "folder"}[layout]
    if source != wanted:
        with atomic_dir(out) as tmp:  # keep the stage's output defined, but spend no time on unused data
            (tmp / "README.txt").write_text(f"Not generated: data.source is '{source}'.\n")
        print(f"skipped: data.source is '{source}', not '{wanted}'")
        return
    generate = generate_folder_like if layout == "folder" else generate_celeba_like
    summary = generate(params.generate, out)
    print(f"generated {summary['images']} SYNTHETIC images ({summary['minority_images']} minority) in {out}")


if __name__ == "__main__":
    run(app)
