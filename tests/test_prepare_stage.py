"""The prepare stage decodes into its output folder: consistent rows on success, nothing at all on failure."""

import shutil

import numpy as np

from fairquant.data.prepare import decode_image, load_prepared
from test_stages import run_stage


def test_prepare_writes_a_store_whose_rows_match_the_table(tmp_path, tiny_celeba):
    root = tmp_path / "celeba"
    shutil.copytree(tiny_celeba, root)
    (root / "img_align_celeba" / "000007.jpg").write_bytes(b"\xff\xd8 truncated")
    result = run_stage("prepare", ["--out", str(tmp_path / "prepared")], tmp_path,
                       {"data.root": str(root), "data.max_corrupt_fraction": 0.05, "prepare.image_size": 16})
    assert result.returncode == 0, result.stderr
    table, images, info = load_prepared(tmp_path / "prepared")
    assert info["corrupt_images"] == 1 and info["samples"] == 119 and images.shape == (119, 16, 16, 3)
    assert "000007.jpg" not in set(table["sample_id"]) and table["row"].tolist() == list(range(119))
    for sample_id, row in zip(table["sample_id"], table["row"]):
        assert np.array_equal(images[row], decode_image(root / "img_align_celeba" / sample_id, 16)), sample_id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["celeba", "params.yaml", "prepared"]

