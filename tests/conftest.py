import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def tiny_celeba(tmp_path_factory):
    """The generator's output: the real CelebA layout, small."""
    from fairquant.data.synthetic import generate_celeba_like
    from fairquant.params import GenerateParams

    root = tmp_path_factory.mktemp("celeba") / "celeba"
    generate_celeba_like(GenerateParams(identities=40, images_per_identity=3, render_size=32, workers=1,
                                        rare_cue_share=0.5), root)
    return root


def write_prepared(folder: Path, n: int = 80, positives_of_minority_in: tuple[str, ...] = ("train", "val", "test"),
                   size: int = 8) -> Path:
    """A tiny prepared folder (samples table, uint8 image store, info) in the prepare stage's format; the minority
    group ('Male' = '1') has positives only in the splits named."""
    import pandas as pd

    from fairquant.io import samples_schema, write_images, write_json, write_table

    rng = np.random.default_rng(0)
    split = np.array(["train", "val", "test"])[np.arange(n) % 3]
    male = np.where(np.arange(n) % 4 == 0, "1", "0")
    y = (np.arange(n) // 12) % 2  # every split of both groups has both labels
    y = np.where((male == "1") & ~np.isin(split, positives_of_minority_in), 0, y)
    table = pd.DataFrame({"sample_id": [f"{i:05d}.jpg" for i in range(n)], "split": split, "y_true": y.astype("int8"),
                          "row": np.arange(n), "Male": male})
    folder.mkdir(parents=True, exist_ok=True)
    write_table(folder / "samples.parquet", table, samples_schema(["Male"]))
    write_images(folder / "images.npy", rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8))
    write_json(folder / "info.json", {"image_size": size, "synthetic": True, "target": "Smiling", "protected": ["Male"]})
    return folder



def write_prepared_samples(folder: Path, samples) -> Path:
    """A prepared folder holding ``samples`` (sample_id, split, y_true, Male; ``row`` is added) and the record the
    shipped params.yaml expects (32 px, Smiling, Male), without an image store: what evaluate and a post-processor
    read to check predictions against the prepared splits."""
    from fairquant.io import samples_schema, write_json, write_table

    folder.mkdir(parents=True, exist_ok=True)
    table = samples[["sample_id", "split", "y_true", "Male"]].reset_index(drop=True)
    table = table.assign(y_true=table["y_true"].astype("int8"), row=np.arange(len(table)))
    write_table(folder / "samples.parquet", table, samples_schema(["Male"]))
    write_json(folder / "info.json", {"image_size": 32, "synthetic": True, "target": "Smiling", "protected": ["Male"]})
    return folder


# The modules that take longest, first: pytest-xdist (--dist loadscope --no-loadscope-reorder) hands out modules in
# collection order, so the end-to-end study (one module, its tests in order on one repository: the suite's long pole)
# starts at once on one worker while the other workers take every other module.
LONGEST_FIRST = ("test_pipeline.py", "test_verify_backbones.py", "test_verify.py", "test_distributed.py",
                 "test_compression.py", "test_stages.py", "test_intervals.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the order within a module is kept
