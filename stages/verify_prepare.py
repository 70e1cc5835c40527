"""Read the verification data in its real layouts (BUPT / identity folders for training, RFW for testing, a
folder of synthetic faces) into image stores, the pairs table and the calibration sets."""

from pathlib import Path

import typer

from fairquant.data.prepare_verification import prepare_verification
from fairquant.io import check_outputs
from fairquant.params import load_params
from stages._cli import run

app = typer.Typer(add_completion=False)


@app.command()
def main(out: Path = typer.Option(..., help="prepared verification folder to write"),
         params_file: Path = typer.Option(Path("params.yaml"), "--params")) -> None:
    params = load_params(params_file)
    check_outputs(folders={"--out": out})  # before any work
    info = prepare_verification(params.verify.data, out)
    train = info["train"]
    per_race = ", ".join(f"{race} {counts['pairs']}" for race, counts in info["pairs"].items())
    print(f"prepared verification data in {out}{' (SYNTHETIC)' if info['synthetic'] else ''}: {train['images']} "
          f"training images of {train['identities']} identities ({train['layout']}), {info['test']['images']} test "
          f"images, pairs per race {per_race}")
    for line in info["summary"]:
        print(line)


if __name__ == "__main__":
    run(app)
