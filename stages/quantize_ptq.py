"""Post-training quantization at any bit-width: real x86 int8 kernels for the W8A8 scheme, simulated otherwise."""

from dataclasses import asdict
from pathlib import Path

import typer

from fairquant.compress import calibration, fakequant, int8
from fairquant.compress.checkpoints import base_config, fp32_size_bytes, save_variant
from fairquant.compress.start import start_compression
from stages._cli import run

app = typer.Typer(add_completion=False)
CHECK_IMAGES = 256  # validation images the int8 kernels are checked on (never used to calibrate)


@app.command()
def main(seed: int = typer.Option(..., help="training seed of the fp32 model (one of params.yaml's seeds)"),
         model_dir: Path = typer.Option(..., "--model", help="fp32 model folder"),
         data: Path = typer.Option(None, help="prepared data: held-out validation images for the int8 kernel check"),
         calibration_dir: Path = typer.Option(..., "--calibration", help="calibration set folder"),
         out: Path = typer.Option(..., help="quantized model folder to write"),
         point: str = typer.Option(None, help="a sweep point (e.g. w4a4): the section's settings with its values"),
         params_file: Path = typer.Option(Path("params.yaml"), "--params")) -> None:
    all_params, params, run_seed, model, fp32_config = start_compression(
        "ptq", seed=seed, model_dir=model_dir, point=point, params_file=params_file, outputs={"--out": out},
        data=data)  # every check before any work; data (optional) holds the int8 check's held-out images
    fakequant.check_layer_names(model, params.layers, "quantize_ptq.layers")
    images, set_info = calibration.load_set(calibration_dir, params.calibration_size, "quantize_ptq.calibration_size",
                                            run_seed, image_size=fp32_config["image_size"])
    scheme = params.scheme()
    name = params.model_copy(update={"calibration": set_info["set"]}).variant_name()  # the set it used
    common = {"scheme": scheme.model_dump(), "calibration": {"set": set_info["set"], "size": len(images)},
              "fp32_size_bytes": fp32_size_bytes(model)}
    if params.kernels != "simulated" and params.uses_int8_kernels():
        batch, size = all_params.latency.batch, fp32_config["image_size"]
        # Compiled and checked against its own q/dq reference here, on the calibration images and on validation
        # images it was not calibrated on: a model whose kernels disagree is refused.
        state, reference, check = int8.quantize_int8(
            model, images, batch, size, params.observer, params.percentile,
            int8.reduce_range_for(params.int8_reduce_range), params.int8_tolerance_db,
            held_out=None if data is None else calibration.held_out_check_images(data, CHECK_IMAGES, run_seed))
        config = base_config(fp32_config, int8.PTQ_INT8.name, name, kernels=int8.PTQ_INT8.kernels, export_batch=batch,
                             size_bytes=int8.stored_size_bytes(reference), int8_check=asdict(check), **common)
    else:
        quantized = fakequant.calibrate(fakequant.quantize_model(model, scheme), images)
        state = quantized.state_dict()
        config = base_config(fp32_config, fakequant.FAKEQUANT.name, name, kernels=fakequant.FAKEQUANT.kernels,
                             size_bytes=fakequant.quantized_size_bytes(quantized),
                             layers=fakequant.describe(quantized), **common)
    save_variant(out, state, config)
    print(f"{name} ({config['kernels']}): {config['size_bytes'] / 1e6:.2f} MB vs {common['fp32_size_bytes'] / 1e6:.2f} MB "
          f"fp32 ({common['fp32_size_bytes'] / config['size_bytes']:.2f}x); calibrated on {len(images)} "
          f"'{set_info['set']}' images")
    if "int8_check" in config:
        print(f"int8 kernels on {check.cpu_capability} (reduce_range {str(check.reduce_range).lower()}): "
              f"{check.summary()}")


if __name__ == "__main__":
    run(app)
