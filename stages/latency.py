"""Time the models on real kernels (the plain fp32 model and its int8 PTQ) of one training seed; evaluate reports it.

Always on the CPU (the int8 kernels are x86 ones; fp32 is timed beside them in the same execution modes), whatever
evaluate.device says, on a seeded batch of latency.batch images: (3 warm-up + latency.repeats) calls, whatever the
test set's size. Each timing names the device, torch's thread count and the CPU's instruction set.

A stage of its own, apart from predict: a timing differs from run to run, so measured inside predict it would make every
re-prediction look like a new result to everything downstream."""

from pathlib import Path

import typer

from fairquant.compress.checkpoints import CHECKPOINT
from fairquant.compress.variants import load_variant
from fairquant.errors import FairquantError
from fairquant.io import check_outputs, write_json
from fairquant.mitigate.slots import TIMED
from fairquant.params import load_params
from stages._cli import run

app = typer.Typer(add_completion=False)


@app.command()
def main(models: Path = typer.Option(..., help="one training seed's model folder, a subfolder per slot"),
         out: Path = typer.Option(..., help="JSON file to write: slot -> mode -> timing"),
         params_file: Path = typer.Option(Path("params.yaml"), "--params")) -> None:
    params = load_params(params_file)
    check_outputs(files={"--out": out})  # before any work
    missing = [slot for slot in TIMED if not (models / slot / CHECKPOINT).is_file()]
    if missing:
        raise FairquantError(f"{models} lacks the models of {missing}; run dvc repro (finetune and quantize_ptq)")
    timings = {}
    for slot in TIMED:
        variant = load_variant(models / slot, batch_size=params.latency.batch, repeats=params.latency.repeats,
                               latency_batch=params.latency.batch, device="cpu")  # timed on the CPU, always
        timings[slot] = variant.latency() if params.latency.repeats else {}
        shown = ", ".join(f"{mode} {v['median_ms']:.1f} ms/batch of {v['batch_size']} on {v['device']} "
                          f"({v['isa']}, {v['threads']} threads)" for mode, v in timings[slot].items())
        print(f"{variant.name}: {shown or 'not timed (latency.repeats: 0)'}")
    write_json(out, timings)


if __name__ == "__main__":
    run(app)
