"""Per-layer weight sharing by k-means (Deep Compression), with optional centroid fine-tuning."""

from pathlib import Path

import typer

from fairquant.compress import kmeans
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
         out: Path = typer.Option(..., help="clustered model folder to write"),
         live_dir: Path = typer.Option(..., "--live", help="dvclive folder for fine-tuning curves"),
         point: str = typer.Option(None, help="a sweep point (e.g. w4a4): the section's settings with its values"),
         params_file: Path = typer.Option(Path("params.yaml"), "--params")) -> None:
    all_params, params, run_seed, model, fp32_config = start_compression(
        "kmeans", seed=seed, model_dir=model_dir, point=point, params_file=params_file,
        outputs={"--out": out, "--live": live_dir}, data=data)  # every check before any work
    with atomic_dir(live_dir) as tmp_live:  # the curves replace --live only once the model is saved
        finetune = compression_finetuner(data, all_params.data.protected, params, tmp_live, "kmeans", freeze_bn=True,
                                         seed=run_seed, section="quantize_kmeans",
                                         processes=all_params.distributed)
        clustered, recorded = kmeans.kmeans_variant(model, params, finetune)
        config = base_config(fp32_config, name=params.variant_name(), training=params.model_dump(), **recorded)
        save_variant(out, clustered.state_dict(), config)
    print(f"{config['name']}: {config['size_bytes'] / 1e6:.2f} MB vs {config['fp32_size_bytes'] / 1e6:.2f} MB fp32 "
          f"({config['fp32_size_bytes'] / config['size_bytes']:.2f}x)")

if __name__ == "__main__":
    run(app)
