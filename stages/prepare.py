"""Decode and resize every image once into data/prepared (uint8 store + samples table)."""

from pathlib import Path

import typer
from rich.progress import Progress

from fairquant.data.loaders import load_dataset
from fairquant.data.prepare import build_image_store, check_labels, label_counts
from fairquant.io import atomic_dir, samples_schema, write_json, write_table
from fairquant.params import load_params
from stages._cli import run

app = typer.Typer(add_completion=False)


@app.command()
def main(out: Path = typer.Option(..., help="prepared folder to write"),
         params_file: Path = typer.Option(Path("params.yaml"), "--params")) -> None:
    params = load_params(params_file)
    raw = load_dataset(params.data)
    checks = {"protected": params.data.protected, "privileged_group": params.evaluate.privileged_group,
              "classes": raw.classes}
    check_labels(raw.table, **checks)  # before decoding a single image: the labels alone can refuse the study
    # The store is decoded straight into the output folder; an error anywhere leaves no output behind.
    with atomic_dir(out) as tmp, Progress(transient=True) as progress:
        task = progress.add_task("decoding images", total=len(raw.table))
        table, _, dropped = build_image_store(
            raw, params.prepare.image_size, params.prepare.workers, params.data.max_corrupt_fraction,
            out=tmp / "images.npy", progress=lambda n: progress.advance(task, n))
        check_labels(table, **checks)  # again on the samples kept (undecodable images dropped)
        info = {
            "synthetic": params.data.source == "synthetic" or raw.synthetic,
            "source": params.data.source, "target": params.data.target, "protected": params.data.protected,
            "image_size": params.prepare.image_size, "samples": len(table), **dropped,
            "counts": label_counts(table, params.data.protected, raw.classes),
        }
        if raw.classes is not None:  # absent for a binary target: its info stays as it was
            info.update(task="multiclass", classes=raw.classes)
        write_table(tmp / "samples.parquet", table, samples_schema(params.data.protected, raw.classes))
        write_json(tmp / "info.json", info)
    print(f"prepared {len(table)} images at {params.prepare.image_size}px; dropped: {dropped}")


if __name__ == "__main__":
    run(app)
