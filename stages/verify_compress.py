"""Compress the face-embedding model with every planned method x bits x calibration set (verify.methods)."""

from pathlib import Path

import typer

from fairquant.compress import fakequant
from fairquant.compress.checkpoints import load_fp32, save_variant
from fairquant.data.verification import load_verification
from fairquant.io import atomic_dir, check_outputs
from fairquant.params import load_params
from fairquant.training import seed_everything
from fairquant.verify.pretrained import fp32_head
from fairquant.verify.variants import VerificationData, build_variant, fine_tunes_with_labels, planned_variants
from stages._cli import run

app = typer.Typer(add_completion=False)


@app.command()
def main(model_dir: Path = typer.Option(..., "--model", help="fp32 embedding model folder"),
         data: Path = typer.Option(..., help="prepared verification data folder"),
         out: Path = typer.Option(..., help="folder to write one model folder per variant into"),
         live_dir: Path = typer.Option(..., "--live", help="dvclive folder (one sub-folder per trained variant)"),
         params_file: Path = typer.Option(Path("params.yaml"), "--params")) -> None:
    params = load_params(params_file)
    check_outputs(folders={"--out": out, "--live": live_dir})  # before any work
    seed = params.verify.train.seed
    model, fp32_config = load_fp32(model_dir, params=params, params_file=params_file)
    fakequant.check_layer_names(model, params.verify.layers, "verify.layers")  # before any variant is made
    prepared = load_verification(data, data=params.verify.data)
    inputs = VerificationData(prepared.train_images, prepared.train_rows, prepared.identities,
                              data / "calibration", prepared.image_size)
    specs = planned_variants(params)
    head_state = fp32_head(model_dir, model, prepared.train_images, prepared.train_rows, prepared.identities,
                           needed=fine_tunes_with_labels(specs, params))
    with atomic_dir(out) as tmp_out, atomic_dir(live_dir) as tmp_live:
        for spec in specs:
            seed_everything(seed, params.verify.quantface.threads)
            state, config = build_variant(spec, model, fp32_config, head_state, params, inputs, tmp_live, seed=seed,
                                          processes=params.distributed)
            save_variant(tmp_out / config["name"], state, config)
            kernels = config["kernels"] + (f", SQNR vs reference {config['int8_check']['sqnr_db']:.1f} dB"
                                           if "int8_check" in config else "")
            print(f"{config['name']} ({kernels}): {config['size_bytes'] / 1e6:.2f} MB vs "
                  f"{config['fp32_size_bytes'] / 1e6:.2f} MB fp32")


if __name__ == "__main__":
    run(app)
