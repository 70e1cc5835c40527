"""Quantization-aware fine-tuning from the fp32 checkpoint (simulated quantization, straight-through gradients)."""

from pathlib import Path

import typer

from fairquant.compress import calibration, fakequant
from fairquant.compress.checkpoints import base_config, save_variant
from fairquant.compress.start import start_compression
from fairquant.io import atomic_dir
from fairquant.training import compression_finetuner
from stages._cli import run

app = typer.Typer(add_completion=False)


@app.command()
def main(seed: int = typer.Option(..., help="training seed of the fp32 model (one of params.yaml's seeds)"),
         data: Path = typer.Option(..., help="prepared data folder"),
         model_dir: Path = typer.Option(..., "--model", help="fp32 model folder"),
         calibration_dir: Path = typer.Option(..., "--calibration", help="calibration set for the initial ranges"),
         out: Path = typer.Option(..., help="quantized model folder to write"),
         live_dir: Path = typer.Option(..., "--live", help="dvclive folder for training curves"),
         point: str = typer.Option(None, help="a sweep point (e.g. w4a4): the section's settings with its values"),
         params_file: Path = typer.Option(Path("params.yaml"), "--params")) -> None:
    all_params, params, run_seed, model, fp32_config = start_compression(
        "qat", seed=seed, model_dir=model_dir, point=point, params_file=params_file,
        outputs={"--out": out, "--live": live_dir}, data=data)  # every check before any work
    fakequant.check_layer_names(model, params.layers, "quantize_qat.layers")
    images, set_info = calibration.load_set(calibration_dir, params.calibration_size, "quantize_qat.calibration_size",
                                            run_seed, image_size=fp32_config["image_size"])
    with atomic_dir(live_dir) as tmp_live:  # the curves replace --live only once the model is saved
        finetune = compression_finetuner(data, all_params.data.protected, params, tmp_live, "qat", freeze_bn=True,
                                         seed=run_seed, section="quantize_qat",
                                         processes=all_params.distributed)
        quantized, recorded = fakequant.qat_variant(model, params, images, finetune)
        config = base_config(fp32_config, name=params.variant_name(),
                             calibration={"set": set_info["set"], "size": len(images)}, **recorded)
        save_variant(out, quantized.state_dict(), config)
    print(f"{config['name']} (simulated): {config['size_bytes'] / 1e6:.2f} MB vs {config['fp32_size_bytes'] / 1e6:.2f} MB fp32")


if __name__ == "__main__":
    run(app)
