"""Write the embedded verification default: SYNTHETIC identities in the BUPT layout (training), the RFW layout
(testing, real pairs-file format) and a folder of unlabelled synthetic faces (calibration). With
verify.data.source real, only the faces: the training and test sets are the user's."""

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
    real = params.verify.data.source == "real"
    summary = generate_verification_data(params.verify.generate, out, faces_only=real)
    if real:
        print(f"verify.data.source is 'real': generated only the {summary['images']} unlabelled SYNTHETIC faces in "
              f"{out / 'faces'} (a fallback synthetic calibration set; point verify.data.synthetic_folder at yours)")
        return
    print(f"generated SYNTHETIC verification data in {out}: {summary}")


if __name__ == "__main__":
    run(app)
