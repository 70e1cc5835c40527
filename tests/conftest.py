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
