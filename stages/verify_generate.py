"""Write the embedded verification default: SYNTHETIC identities in the BUPT layout (training), the RFW layout
(testing, real pairs-file format) and a folder of unlabelled synthetic faces (calibration)."""

from pathlib import Path

import typer

from fairquant.data.synthetic_verification import generate_verification_data
from fairquant.params import load_params
from stages._cli import run

app = typer.Typer(add_completion=False)


@app.command()
def main(out: Path = typer.Option(..., help="root folder to write"),
         params_file: Path = typer.Option(Path("params.yaml"), "--params")) -> None:
    params = load_params(params_file)
    summary = generate_verification_data(params.verify.generate, out)
    print(f"generated SYNTHETIC verification data in {out}: {summary}")


if __name__ == "__main__":
    run(app)
