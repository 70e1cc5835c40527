"""Image modes and shapes that decode to 8-bit RGB correctly (the refusals are catalogue cases:
tests/test_catalogue_datasets.py)."""

import numpy as np
import pytest
from PIL import Image


@pytest.mark.parametrize("mode, pixels, expected", [
    ("I;16", np.full((8, 8), 0x8000, np.uint16), 128),  # PIL's own conversion would clip it to 255
    ("L", np.full((8, 8), 77, np.uint8), 77),
    ("1", np.full((8, 8), True), 255),  # a bool array is a 1-bit image
])
def test_greyscale_depths_decode_to_their_8_bit_value(tmp_path, mode, pixels, expected):
    from fairquant.data.prepare import decode_image

    Image.fromarray(pixels).save(tmp_path / "x.png")
    assert Image.open(tmp_path / "x.png").mode == mode
    decoded = decode_image(tmp_path / "x.png", 8)
    assert decoded.shape == (8, 8, 3) and np.all(decoded == expected)


def _palette_with_transparency() -> Image.Image:
    image = Image.new("P", (8, 8), 0)
    image.putpalette([90, 90, 90] * 256)
    return image


@pytest.mark.parametrize("make", [
    lambda p: Image.new("CMYK", (8, 8), (0, 255, 0, 0)).save(p, format="JPEG"),
    lambda p: Image.new("LA", (8, 8), (90, 0)).save(p, format="PNG"),
    lambda p: _palette_with_transparency().save(p, format="PNG", transparency=0),
    lambda p: Image.new("RGB", (8, 8), (90, 90, 90)).save(p, format="PNG"),
    lambda p: Image.new("RGB", (8, 80), (90, 90, 90)).save(p, format="PNG"),
], ids=["cmyk", "la", "palette-transparency", "8x8", "8x80"])
def test_other_modes_and_shapes_decode_to_rgb_without_warnings(tmp_path, make, recwarn):
    from fairquant.data.prepare import decode_image

    make(tmp_path / "x.img")
    decoded = decode_image(tmp_path / "x.img", 8)
    assert decoded is not None and decoded.shape == (8, 8, 3) and decoded.dtype == np.uint8
    assert not [w for w in recwarn if "PIL" in str(w.filename)]
