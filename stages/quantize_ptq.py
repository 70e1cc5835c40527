"""Static post-training int8 quantization, calibrated on training images only."""

from pathlib import Path

import typer

from fairquant import quantization
from fairquant.data.prepare import calibration_indices, load_prepared
from fairquant.io import atomic_dir, load_checkpoint, save_checkpoint, write_json
from fairquant.params import load_params
from fairquant.variants import CHECKPOINT, build_fp32
from stages._cli import run

app = typer.Typer(add_completion=False)


@app.command()
def main(data: Path = typer.Option(..., help="prepared data folder"),
         model_dir: Path = typer.Option(..., "--model", help="fp32 model folder"),
         out: Path = typer.Option(..., help="quantized model folder to write"),
         params_file: Path = typer.Option(Path("params.yaml"), "--params")) -> None:
    params = load_params(params_file).quantize_ptq
    table, images, info = load_prepared(data)
    rows = calibration_indices(table, params.calibration_size, params.seed)
    checkpoint = load_checkpoint(model_dir / CHECKPOINT)
    fp32_config = checkpoint["config"]
    model = build_fp32(fp32_config, checkpoint["state_dict"])
    batch = params.latency_batch
    state = quantization.calibrate_int8(model, images[rows], batch, info["image_size"])
    converted = quantization.convert_int8(model, state, batch, info["image_size"])
    config = {**fp32_config, "kind": "ptq-int8", "name": "ptq-int8", "export_batch": batch,
              "calibration": {"set": params.calibration, "size": int(rows.size), "seed": params.seed},
              "size_bytes": quantization.stored_size_bytes(converted),
              "fp32_size_bytes": quantization.fp32_size_bytes(model)}
    with atomic_dir(out) as tmp:
        save_checkpoint(tmp / CHECKPOINT, state, config)
        write_json(tmp / "info.json", {k: v for k, v in config.items() if k != "finetune"})
    print(f"int8: {config['size_bytes'] / 1e6:.2f} MB stored vs {config['fp32_size_bytes'] / 1e6:.2f} MB fp32 "
          f"({config['fp32_size_bytes'] / config['size_bytes']:.2f}x); calibrated on {rows.size} training images")


if __name__ == "__main__":
    run(app)
