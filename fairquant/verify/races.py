"""A race classifier on the fp32 embeddings, to estimate the race mix of an unlabelled (synthetic) face set,
as seed 001 did for its StyleGAN faces. A linear probe fitted on training identities, scored on held-out
training identities (identity-disjoint), so its quality is stated next to every estimate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from fairquant.io import ImageRows
from fairquant.verify.embedding import embed


def estimate_race_mix(forward, train_images: np.ndarray, train: pd.DataFrame, unlabelled: np.ndarray, *, seed: int,
                      max_images: int = 3000, batch_size: int = 256) -> dict | None:
    """{'estimated': race -> share of ``unlabelled``, 'probe': quality on held-out identities}; None when the
    training set has fewer than two known races."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score

    known = train[train["race"] != "unknown"]
    if known["race"].nunique() < 2 or len(unlabelled) == 0:
        return None
    rng = np.random.default_rng(seed)
    if len(known) > max_images:  # a linear probe needs few examples; embeddings cost time
        known = known.iloc[np.sort(rng.choice(len(known), max_images, replace=False))]
    identities = known["identity"].unique()
    held = set(rng.choice(identities, max(1, len(identities) // 5), replace=False).tolist())
    is_held = known["identity"].isin(held).to_numpy()
    features = embed(forward, ImageRows(train_images, known["row"].to_numpy()), batch_size)
    labels = known["race"].to_numpy()
    probe = LogisticRegression(max_iter=2000, random_state=seed).fit(features[~is_held], labels[~is_held])
    held_pred = probe.predict(features[is_held])
    with torch.no_grad():
        predicted = probe.predict(embed(forward, unlabelled, batch_size))
    races = [str(r) for r in probe.classes_]
    return {"estimated": {r: float(np.mean(predicted == r)) for r in races},
            "images": int(len(unlabelled)),
            "probe": {"fitted_on": "training identities (fp32 embeddings)", "held_out_identities": len(held),
                      "held_out_accuracy": float(np.mean(held_pred == labels[is_held])),
                      "held_out_balanced_accuracy": float(balanced_accuracy_score(labels[is_held], held_pred))}}
