"""A race classifier on the fp32 embeddings, to estimate the race mix of an unlabelled (synthetic) face set,
as "Compressed Models Decompress Race Biases" did for its StyleGAN faces.

A linear probe (balanced class weights) fitted on training identities. Counting its predictions on the
unlabelled set is biased toward the races it confuses others with, so the estimate is also adjusted by its
confusion matrix on held-out training identities (adjusted classify-and-count: observed prediction shares =
C^T x true shares, solved for non-negative shares summing to 1). Its quality is stated on those held-out
identities and, where given, on the labelled test faces (never fitted on)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from fairquant.io import ImageRows
from fairquant.verify.embedding import embed


def adjusted_shares(confusion: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Shares p >= 0, sum 1, with confusion.T @ p closest to ``observed`` (rows of ``confusion``: true race,
    columns: predicted race, each row summing to 1)."""
    from scipy.optimize import nnls

    k = len(observed)
    system = np.vstack([confusion.T, 10.0 * np.ones((1, k))])  # the sum-to-one row, weighted
    target = np.concatenate([observed, [10.0]])
    shares, _ = nnls(system, target)
    return shares / shares.sum() if shares.sum() > 0 else np.full(k, 1 / k)


def estimate_race_mix(forward, train_images: np.ndarray, train: pd.DataFrame, unlabelled: np.ndarray, *, seed: int,
                      test_images: np.ndarray | None = None, test: pd.DataFrame | None = None,
                      max_images: int = 3000, batch_size: int = 256,
                      device: torch.device | str = "cpu") -> dict | None:
    """{'estimated', 'classified', 'probe'}; None when the training set has fewer than two known races.
    ``forward`` runs on ``device`` (the embeddings; the probe itself is scikit-learn's, on the CPU)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix

    known = train[train["race"] != "unknown"]
    if known["race"].nunique() < 2 or len(unlabelled) == 0:
        return None
    rng = np.random.default_rng(seed)
    if len(known) > max_images:  # a linear probe needs few examples; embeddings cost time
        known = known.iloc[np.sort(rng.choice(len(known), max_images, replace=False))]
    identities = known["identity"].unique()
    held = set(rng.choice(identities, max(1, len(identities) // 5), replace=False).tolist())
    is_held = known["identity"].isin(held).to_numpy()
    features = embed(forward, ImageRows(train_images, known["row"].to_numpy()), batch_size, device=device)
    labels = known["race"].to_numpy()
    probe = LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed)
    probe.fit(features[~is_held], labels[~is_held])
    races = [str(r) for r in probe.classes_]
    held_pred = probe.predict(features[is_held])
    confusion = confusion_matrix(labels[is_held], held_pred, labels=races, normalize="true")
    predicted = probe.predict(embed(forward, unlabelled, batch_size, device=device))
    observed = np.array([np.mean(predicted == r) for r in races])
    quality = {"fitted_on": "training identities (fp32 embeddings), balanced class weights",
               "held_out_identities": len(held),
               "held_out_balanced_accuracy": float(balanced_accuracy_score(labels[is_held], held_pred))}
    if test is not None and test_images is not None and len(test):
        sample = test.iloc[np.sort(rng.choice(len(test), min(len(test), max_images), replace=False))]
        test_pred = probe.predict(embed(forward, ImageRows(test_images, sample["row"].to_numpy()), batch_size,
                                        device=device))
        quality["test_balanced_accuracy"] = float(balanced_accuracy_score(sample["race"].to_numpy(), test_pred))
    return {"estimated": dict(zip(races, map(float, adjusted_shares(confusion, observed)))),
            "classified": dict(zip(races, map(float, observed))),
            "images": int(len(unlabelled)), "probe": quality}
