import pytest
import torch
from torch import nn

from fairquant.errors import FairquantError
from fairquant.models import build_model, pick_device


def test_squeezenet_logit_is_not_clamped_by_a_relu():
    """torchvision's SqueezeNet head ends in a ReLU; on a one-logit head that would make every score >= 0.5."""
    model = build_model("squeezenet1_1", small_input_stem=True).eval()
    with torch.no_grad():
        model.classifier[1].bias.fill_(-10.0)
        model.classifier[1].weight.zero_()
        logits = model(torch.randn(2, 3, 32, 32))
    assert torch.allclose(logits, torch.full_like(logits, -10.0))


def test_device_error_names_the_key_that_asked_for_cuda():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    with pytest.raises(FairquantError, match=r"^quantize_qat\.device is 'cuda' but no CUDA device is visible"):
        pick_device("cuda", key="quantize_qat.device")


def test_group_probe_features_work_for_a_convolution_head():
    """SqueezeNet's head is a 1x1 convolution, not a Linear: the calibration stage's group probe must still work."""
    import numpy as np

    from fairquant.compress.calibration import penultimate_features

    model = build_model("squeezenet1_1", small_input_stem=True)
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    features = penultimate_features(model, images)
    assert features.shape == (3, 512) and np.isfinite(features).all()


def test_vit_small_has_vit_s_dimensions_and_one_logit():
    """ViT-S as "Beyond Naive Quantization" quantizes it: width 384, 6 heads, MLP 1536, depth 12, a class token, and a
    patch size of image_size // 8 (32 px -> 4 px patches, 64 patch tokens)."""
    model = build_model("vit_small", small_input_stem=False, image_size=32).eval()
    assert model.patch_size == 4 and model.patch_embed.kernel_size == (4, 4) and model.patch_embed.stride == (4, 4)
    assert model.pos_embed.shape == (1, 65, 384) and model.cls_token.shape == (1, 1, 384)
    assert len(model.blocks) == 12
    block = model.blocks[0]
    assert block.attn.heads == 6 and block.attn.qkv.out_features == 3 * 384 and block.attn.proj.out_features == 384
    assert block.mlp.fc1.out_features == 1536 and block.mlp.fc2.out_features == 384
    # every weight in a Linear or the patch convolution: nothing left outside what compressors wrap
    assert {type(m) for m in model.modules() if len(list(m.parameters(recurse=False)))} == {
        nn.Conv2d, nn.Linear, nn.LayerNorm, type(model)}
    per_block = 4 * 384 * 384 + 4 * 384 + 2 * 384 * 1536 + 1536 + 384 + 4 * 384
    patches = 3 * 4 * 4 * 384 + 384
    cls_pos_norm_head = 384 + 65 * 384 + 2 * 384 + 385
    assert sum(p.numel() for p in model.parameters()) == patches + cls_pos_norm_head + 12 * per_block
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 1)
    embedding = build_model("vit_small", small_input_stem=False, embedding_dim=128, image_size=16).eval()
    with torch.no_grad():
        assert embedding(torch.randn(2, 3, 16, 16)).shape == (2, 128)


@pytest.mark.parametrize("size, patch, tokens", [(8, 2, 16), (16, 2, 64), (24, 3, 64), (64, 8, 64), (112, 14, 64)])
def test_vit_patch_size_follows_the_image_size(size, patch, tokens):
    from fairquant.params.base import vit_patch_size

    assert vit_patch_size(size) == patch and (size // patch) ** 2 == tokens


def test_vit_small_refuses_an_image_size_its_patches_do_not_tile():
    with pytest.raises(FairquantError, match=r"^prepare\.image_size is 33, which vit_small's 4 px patches .* do not "
                                             r"tile; choose a multiple of 8, e.g. 32 or 40$"):
        build_model("vit_small", small_input_stem=False, image_size=33)
    with pytest.raises(FairquantError, match=r"^verify\.data\.image_size is 17, which vit_small's 2 px patches"):
        build_model("vit_small", small_input_stem=False, embedding_dim=8, image_size=17,
                    image_size_key="verify.data.image_size")
    with pytest.raises(FairquantError, match=r"^vit_small needs the input image size \(prepare\.image_size\)"):
        build_model("vit_small", small_input_stem=False)


@pytest.mark.parametrize("raw, message", [
    ({"model": {"arch": "vit_small"}, "prepare": {"image_size": 33}},
     "params.yaml: prepare.image_size is 33, which vit_small's 4 px patches (image_size // 8, at least 2) do not "
     "tile; choose a multiple of 8, e.g. 32 or 40"),
    ({"verify": {"model": {"arch": "vit_small"}, "data": {"image_size": 25}}},
     "params.yaml: 'verify': verify.data.image_size is 25, which vit_small's 3 px patches (image_size // 8, at least "
     "2) do not tile; choose a multiple of 8, e.g. 24 or 32"),
])
def test_params_refuse_a_vit_image_size_on_load(raw, message):
    """Refused when params.yaml is read, before prepare or training runs; sizes the patches tile pass."""
    from fairquant.params import parse_params

    with pytest.raises(FairquantError) as error:
        parse_params(raw)
    assert str(error.value) == message
    assert parse_params({"model": {"arch": "vit_small"}, "prepare": {"image_size": 36}}).model.arch == "vit_small"
    assert parse_params({"model": {"arch": "resnet18"}, "prepare": {"image_size": 33}}).prepare.image_size == 33


def test_vit_small_checkpoint_round_trip(tmp_path):
    """A stored fp32 vit_small rebuilds from its config alone (the image size fixes its patches) and predicts the
    same scores; the loader reports its fp32 size."""
    import numpy as np

    from fairquant.compress.checkpoints import fp32_size_bytes, load_fp32, save_variant
    from fairquant.compress.variants import load_variant
    from fairquant.training import predict_scores

    torch.manual_seed(0)
    model = build_model("vit_small", small_input_stem=False, image_size=8).eval()
    config = {"kind": "fp32", "name": "fp32", "arch": "vit_small", "small_input_stem": False, "image_size": 8}
    save_variant(tmp_path / "fp32", model.state_dict(), config)
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    expected = predict_scores(model, images, 3)
    loaded, stored_config = load_fp32(tmp_path / "fp32")
    assert stored_config == config and loaded.patch_size == 2
    assert np.array_equal(predict_scores(loaded, images, 3), expected)
    variant = load_variant(tmp_path / "fp32", batch_size=3, repeats=1, latency_batch=2)
    assert variant.size_bytes == fp32_size_bytes(model) == 4 * sum(p.numel() for p in model.parameters())
    assert np.array_equal(variant.score(images), expected)


def test_group_probe_reads_the_vit_class_token_features():
    import numpy as np

    from fairquant.compress.calibration import penultimate_features

    model = build_model("vit_small", small_input_stem=False, image_size=8)
    features = penultimate_features(model, np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8))
    assert features.shape == (2, 384) and np.isfinite(features).all()
