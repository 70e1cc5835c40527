"""Write the embedded verification default: SYNTHETIC identities in the BUPT layout (training), the RFW layout
(testing, real pairs-file format) and a folder of unlabelled synthetic faces (calibration). With
verify.data.source real, only the faces, and nothing when verify.data.synthetic_folder is the user's own: the
training and test sets are the user's."""

from pathlib import Path

import typer

from fairquant.data.synthetic_verification import generate_verification_data
from fairquant.errors import FairquantError
from fairquant.io import atomic_dir, check_outputs
from fairquant.params import load_params
from stages._cli import run

app = typer.Typer(add_completion=False)


@app.command()
def main(out: Path = typer.Option(..., help="root folder to write"),
         params_file: Path = typer.Option(Path("params.yaml"), "--params")) -> None:
    params = load_params(params_file)
    check_outputs(folders={"--out": out})  # before any work
    data = params.verify.data
    real = data.source == "real"
    if real:
        stale = [f"verify.data.{key}" for key in ("train_root", "rfw_root") if _inside(getattr(data, key), out)]
        if stale:
            raise FairquantError(f"verify.data.source is 'real' but {' and '.join(stale)} still point into the "
                                 f"generated default {out}; set them to your BUPT (or identity folders) and RFW roots")
        if not _inside(data.synthetic_folder, out):  # the user's own faces: nothing of the default is read
            with atomic_dir(out) as tmp:
                (tmp / "README.txt").write_text("Not generated: verify.data.source is 'real' and "
                                                f"verify.data.synthetic_folder is {data.synthetic_folder}.\n")
            print(f"skipped: verify.data.source is 'real' and the synthetic faces are {data.synthetic_folder}")
            return
    summary = generate_verification_data(params.verify.generate, out, faces_only=real)
    if real:
        print(f"verify.data.source is 'real': generated only the {summary['images']} unlabelled SYNTHETIC faces in "
              f"{out / 'faces'} (a fallback synthetic calibration set; point verify.data.synthetic_folder at yours)")
        return
    print(f"generated SYNTHETIC verification data in {out}: {summary}")


def _inside(path: str, root: Path) -> bool:
    return Path(path).resolve().is_relative_to(root.resolve())


if __name__ == "__main__":
    run(app)
