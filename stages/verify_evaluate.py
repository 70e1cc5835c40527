"""Score every verification variant on the test pairs and evaluate it per race: RFW's 10-fold protocol
(per-race accuracy, STD, SER), one global threshold (per-race FMR / FNMR), paired changes vs fp32, and the
synthetic calibration set's race mix as a classifier estimates it; per method x calibration set, the trend of SER and
each race's accuracy over verify.bits."""

from pathlib import Path

import numpy as np
import pandas as pd
import typer

from fairquant.compress.variants import load_variant
from fairquant.data.verification import load_verification
from fairquant.fairness.verification import bit_curves, race_differences, verification_report
from fairquant.io import (PAIR_SCORES_SCHEMA, atomic_dir, check_outputs, read_images, read_json, write_json,
                          write_table)
from fairquant.models import scoring_device
from fairquant.params import load_params
from fairquant.verify.embedding import embed, pair_scores
from fairquant.verify.races import estimate_race_mix
from stages._cli import run

app = typer.Typer(add_completion=False)


def _variant_folders(fp32: Path, variants: Path) -> list[Path]:
    folders = [fp32] + sorted(p for p in variants.iterdir() if (p / "model.pt").is_file())
    return folders


@app.command()
def main(data: Path = typer.Option(..., help="prepared verification data folder"),
         fp32_dir: Path = typer.Option(..., "--fp32", help="fp32 embedding model folder"),
         variants_dir: Path = typer.Option(..., "--variants", help="folder of compressed variant folders"),
         predictions: Path = typer.Option(..., help="folder to write <variant>/pairs.parquet into"),
         metrics: Path = typer.Option(..., help="metrics JSON to write"),
         params_file: Path = typer.Option(Path("params.yaml"), "--params")) -> None:
    params = load_params(params_file)
    check_outputs(folders={"--predictions": predictions}, files={"--metrics": metrics})  # before any work
    settings = params.verify.evaluate
    device = scoring_device(params.evaluate.device)  # float models embed there; real int8 on the CPU
    prepared = load_verification(data, data=params.verify.data)
    pairs = prepared.pairs
    scores, configs = {}, {}
    race_mix = None
    for folder in _variant_folders(fp32_dir, variants_dir):
        variant = load_variant(folder, batch_size=settings.batch_size, repeats=0, latency_batch=params.latency.batch,
                               device=device)
        embeddings = embed(variant.forward, prepared.test_images, settings.batch_size, device=variant.device)
        scores[variant.name] = pair_scores(embeddings, pairs["row1"].to_numpy(), pairs["row2"].to_numpy())
        configs[variant.name] = {**variant.config, "size_bytes": variant.size_bytes}  # the registry's count, any kind
        if variant.name == "fp32":
            synthetic = data / "calibration" / "synthetic" / "images.npy"
            if synthetic.is_file():
                race_mix = estimate_race_mix(variant.forward, prepared.train_images, prepared.train,
                                             np.asarray(read_images(synthetic)), seed=params.verify.data.seed,
                                             test_images=prepared.test_images, test=prepared.test,
                                             device=variant.device)
                manifest = Path(params.verify.data.synthetic_folder) / "manifest.json"
                if race_mix is not None and manifest.is_file():  # generated faces know their mix: compare only
                    race_mix["true"] = read_json(manifest).get("race_mix")
    report = verification_report(scores, pairs["genuine"].to_numpy(), pairs["fold"].to_numpy(),
                                 pairs["race"].to_numpy(), reference="fp32", bootstrap=settings.bootstrap,
                                 confidence=params.evaluate.confidence, seed=params.evaluate.seed,
                                 target_fmr=settings.target_fmr, curves=bit_curves(configs))
    variants = report["variants"]
    for name, values in scores.items():  # do the races differ at all (pairwise, simultaneous CIs)
        variants[name]["race_differences"] = race_differences(
            values, pairs["genuine"].to_numpy(), pairs["fold"].to_numpy(), pairs["race"].to_numpy(),
            bootstrap=settings.bootstrap, confidence=params.evaluate.confidence, seed=params.evaluate.seed)
    for name, against in calibration_contrasts(configs).items():
        # the calibration set's own effect: a synthetic-calibrated variant against the same method and bits
        # calibrated on real training faces, paired on the same pairs and resamples
        paired = verification_report({against: scores[against], name: scores[name]}, pairs["genuine"].to_numpy(),
                                     pairs["fold"].to_numpy(), pairs["race"].to_numpy(), reference=against,
                                     bootstrap=settings.bootstrap, confidence=params.evaluate.confidence,
                                     seed=params.evaluate.seed, target_fmr=settings.target_fmr)
        variants[name]["vs_real_calibration"] = {"reference": against, **paired["variants"][name]["change"]}
    for name, config in configs.items():
        variants[name]["variant"] = {key: config.get(key) for key in (
            "kind", "kernels", "size_bytes", "fp32_size_bytes", "verify_method", "calibration", "scheme",
            "int8_check", "sparsity", "clusters", "trained_here", "pretrained")
            if config.get(key) is not None}
    with atomic_dir(predictions) as tmp:
        for name, values in scores.items():
            frame = pd.DataFrame({"pair_id": pairs["pair_id"], "fold": pairs["fold"].astype(np.int16),
                                  "race": pairs["race"], "genuine": pairs["genuine"].astype(bool),
                                  "score": values})
            write_table(tmp / name / "pairs.parquet", frame, PAIR_SCORES_SCHEMA)
    write_json(metrics, {"synthetic": bool(prepared.info.get("synthetic")), "synthetic_race_mix": race_mix, **report})
    for name, r in variants.items():
        summary = {key: r["summary"][key]["value"] for key in ("verification_accuracy", "verification_std", "ser")}
        print(f"{name}: accuracy {summary['verification_accuracy']:.4f}, STD {summary['verification_std']:.4f}, "
              f"SER {'inf' if summary['ser'] is None else round(summary['ser'], 3)}")
    for name, trend in report["trends"].items():
        print(f"{name} over bits {trend['x']}: SER {trend['ser']['verdict']}, " + ", ".join(
            f"{race} {answer['as_bits_fall']}" for race, answer in trend["accuracy"].items()))


def calibration_contrasts(configs: dict[str, dict]) -> dict[str, str]:
    """variant -> the variant of the same method and bits calibrated on the real training set."""
    real = {(c.get("verify_method"), c.get("scheme", {}).get("bits")): name for name, c in configs.items()
            if c.get("calibration", {}).get("set") == "train"}
    out = {}
    for name, c in configs.items():
        key = (c.get("verify_method"), c.get("scheme", {}).get("bits"))
        if c.get("verify_method") in ("ptq", "quantface") and c.get("calibration", {}).get("set") != "train" \
                and key in real:
            out[name] = real[key]
    return out


if __name__ == "__main__":
    run(app)
