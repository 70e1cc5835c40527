import pytest
import torch

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
