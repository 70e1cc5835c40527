"""Compression-identified exemplars (Hooker et al., "What Do Compressed Deep Neural Networks Forget?", 2019): the test
images whose label a compressed variant changed from fp32's, shown per group, a bounded number each.

Chosen deterministically: a group's flipped images in a seeded random order (the training seed's), the first
``per_group`` of them -- a fair sample of the group's flips, the same on every run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fairquant.errors import FairquantError
from fairquant.fairness.metrics import group_labels
from fairquant.report.document import Cell, Gallery, Picture, Section, prose, table

RERUN = "re-run predict and prepare with these params (dvc repro)"


def flipped(fp32: pd.DataFrame, variant: pd.DataFrame, *, name: str) -> pd.DataFrame:
    """fp32's test rows where ``variant`` predicts another label, with the variant's label as ``y_variant``; refused
    when the two do not hold the same test samples."""
    theirs = variant.set_index("sample_id")["y_pred"]
    if len(variant) != len(fp32) or not fp32["sample_id"].isin(theirs.index).all():
        raise FairquantError(f"the test predictions of {name} and fp32 hold different samples ({len(variant)} and "
                             f"{len(fp32)} rows); they come from different runs: {RERUN}")
    out = fp32.assign(y_variant=theirs.loc[fp32["sample_id"]].to_numpy())
    return out[out["y_variant"] != out["y_pred"]]


def choose(rows: pd.DataFrame, per_group: int, seed: int) -> pd.DataFrame:
    """The first ``per_group`` of ``rows`` in an order seeded by ``seed`` and the rows' sample ids (not their order
    in the file)."""
    rows = rows.sort_values("sample_id", kind="stable")
    order = np.random.default_rng(seed).permutation(len(rows))
    return rows.iloc[np.sort(order[:per_group])]


def label_name(label: int, classes: list[str] | None, target: str) -> str:
    if classes:
        return classes[label]
    return target if label == 1 else f"not {target}"


def exemplars_section(predictions: dict[str, pd.DataFrame], samples: pd.DataFrame, images: np.ndarray, info: dict, *,
                      per_group: int, seed: int) -> Section:
    """A subsection per compressor (``predictions`` by slot, fp32 first): each group's count of flipped test images
    and up to ``per_group`` of them, from the prepared store (``samples``' test rows, ``images``, ``info``)."""
    protected, classes, synthetic = info["protected"], info.get("classes"), info["synthetic"]
    test = samples[samples["split"] == "test"].set_index("sample_id")["row"]
    fp32 = predictions["fp32"]
    unknown = fp32.loc[~fp32["sample_id"].isin(test.index), "sample_id"]
    if len(unknown):
        raise FairquantError(f"fp32's test predictions hold sample {unknown.iloc[0]!r}, which is not in the prepared "
                             f"test split; {RERUN}")
    groups = sorted(set(group_labels(fp32, protected)))
    subsections = []
    for slot, frame in predictions.items():
        if slot == "fp32":
            continue
        changed = flipped(fp32, frame, name=slot)
        by_group = group_labels(changed, protected) if len(changed) else np.array([], dtype=str)
        sizes = pd.Series(group_labels(fp32, protected)).value_counts()
        rows, galleries = [], []
        for group in groups:
            mine = changed[by_group == group]
            rows.append([Cell(group), Cell(len(mine), "int"), Cell(int(sizes[group]), "int"),
                         Cell(len(mine) / int(sizes[group]), "pct")])
            shown = choose(mine, per_group, seed)
            pictures = tuple(Picture(np.asarray(images[test[r.sample_id]]), f"{r.sample_id}: true "
                                     f"{label_name(r.y_true, classes, info['target'])}; fp32 says "
                                     f"{label_name(r.y_pred, classes, info['target'])}, {slot} says "
                                     f"{label_name(r.y_variant, classes, info['target'])}")
                             for r in shown.itertuples())
            if pictures:
                galleries.append(Gallery(f"{group}: {len(pictures)} of {len(mine)} flipped", pictures, synthetic))
        subsections.append(Section(slot, (table(["group", "flipped", "test images", "flipped (%)"], rows),
                                          *galleries)))
    what = "SYNTHETIC images (the generated default data set, not real faces)" if synthetic else "test images"
    intro = prose(f"Compression-identified exemplars (Hooker et al. 2019): the {what} whose label each compressor "
                  f"changed from fp32's, per group: how many, and up to {per_group} of them, chosen in a seeded order "
                  f"(training seed {seed}). A group whose images flip more often is one the compression forgets first.")
    return Section("Flipped test images", (intro,), tuple(subsections))


def read_test_predictions(root: Path, slots: list[str], mitigate, *, protected: list[str]) -> dict[str, pd.DataFrame]:
    """One seed's test predictions of ``slots`` (fp32 first, then model slots) from its predictions folder ``root``,
    each checked as the evaluate stage checks it."""
    from fairquant.fairness.evaluation import classes_of
    from fairquant.io import read_table
    from fairquant.mitigate.slots import predictions_folder
    from fairquant.results import PredictionsInfo, check_predictions

    out = {}
    for slot in slots:
        folder = predictions_folder(root, slot, mitigate)
        frame = read_table(folder / "test.parquet")
        check_predictions(frame, source=str(folder / "test.parquet"), protected=protected,
                          classes=classes_of(PredictionsInfo.read(folder)))
        out[slot] = frame
    return out
