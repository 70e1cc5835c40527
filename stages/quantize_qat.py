"""Quantization-aware fine-tuning from the fp32 checkpoint (simulated quantization, straight-through gradients)."""

from pathlib import Path

import typer

from fairquant.compress import calibration, fakequant
from fairquant.compress.checkpoints import base_config, fp32_size_bytes, load_fp32, save_variant, variant_name
from fairquant.params import QuantSchemeParams, load_params
from fairquant.training import compression_finetuner, derived_seed, seed_everything
from stages._cli import run

app = typer.Typer(add_completion=False)


@app.command()
def main(seed: int = typer.Option(..., help="training seed of the fp32 model (one of params.yaml's seeds)"),
         data: Path = typer.Option(..., help="prepared data folder"),
         model_dir: Path = typer.Option(..., "--model", help="fp32 model folder"),
         calibration_dir: Path = typer.Option(..., "--calibration", help="calibration set for the initial ranges"),
         out: Path = typer.Option(..., help="quantized model folder to write"),
         live_dir: Path = typer.Option(..., "--live", help="dvclive folder for training curves"),
         params_file: Path = typer.Option(Path("params.yaml"), "--params")) -> None:
    all_params = load_params(params_file)
    params = all_params.quantize_qat
    run_seed = derived_seed(seed, params.seed)  # this training seed's chain
    seed_everything(run_seed, params.threads)
    model, fp32_config = load_fp32(model_dir)
    images, set_info = calibration.load_set(calibration_dir, params.calibration_size, "quantize_qat.calibration_size",
                                            run_seed)
    scheme = params.scheme()
    name = variant_name("qat", params)
    # Activation ranges come from calibration and stay fixed; weights and their ranges train (STE).
    quantized = fakequant.calibrate(fakequant.quantize_model(model, scheme), images)
    finetune = compression_finetuner(data, all_params.data.protected, params, live_dir, "qat", freeze_bn=True,
                                     seed=run_seed, section="quantize_qat")
    if finetune:
        quantized = finetune(quantized)
    quantized.eval()
    config = base_config(fp32_config, "fakequant", name, kernels="simulated", scheme=scheme.model_dump(),
                         calibration={"set": set_info["set"], "size": len(images)},
                         training=params.model_dump(exclude=set(QuantSchemeParams.model_fields)),
                         size_bytes=fakequant.quantized_size_bytes(quantized),
                         fp32_size_bytes=fp32_size_bytes(model), layers=fakequant.describe(quantized))
    save_variant(out, quantized.state_dict(), config)
    print(f"{name} (simulated): {config['size_bytes'] / 1e6:.2f} MB vs {config['fp32_size_bytes'] / 1e6:.2f} MB fp32")


if __name__ == "__main__":
    run(app)
