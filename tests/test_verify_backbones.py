"""insightface's backbones (IResNet 18/34/50/100, MobileFaceNet): an arcface_torch backbone.pth loads as it is,
strictly; bad files are refused with one line; the verification compressors take them."""

import hashlib
import pickle
from typing import get_args

import numpy as np
import pytest
import torch

from fairquant.compress.checkpoints import HEAD, save_variant
from fairquant.errors import FairquantError
from fairquant.models import build_from_config, build_model
from fairquant.params import Params, VerifyParams
from fairquant.params.verify import FaceBackboneName
from fairquant.face_backbones import FACE_BACKBONES, face_backbone
from fairquant.verify.pretrained import centroid_head, fp32_head, load_backbone

# The (name, shape) list of each arcface_torch backbone's state dict (num_features 512, 112 x 112), from
# deepinsight/insightface@7fadd420c2351d0ffa8cac403421c1a3ed733365 recognition/arcface_torch/backbones/
# (iresnet.py: iresnet18..100; mobilefacenet.py: get_mbf(False, 512)): the number of tensors and the SHA-256 of
# the lines "name:[shape]\n" in state-dict order. Recorded by running that source; our modules load those
# models' state dicts strictly and gave identical embeddings (max |difference| 0.0 on random weights).
ARCFACE_TORCH = {
    "iresnet18": (187, "9c8d75f597027dc64262ca2454200828769b6193e9c6accc3fdf2425ef7a7546"),
    "iresnet34": (331, "a3348b0bbd6c3ee01501a9d3cd7eac0652f1aec79dd7355e833fe10838d32a59"),
    "iresnet50": (475, "4276c7376a21aaf8f4faf7a6f2190743719cfe288284ea633af2f4443bd5dd9f"),
    "iresnet100": (925, "d98a934e38064e286b1b9f71d95893e62f82db75ed32009c9db0174fd8369447"),
    "mobilefacenet": (333, "c156201294c03aa252b78de5b0442159036cd311dea0bffca7331db1028315e7"),
}


def _shapes(arch: str, image_size: int = 112, embedding_dim: int = 512) -> dict:
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        return {k: list(v.shape) for k, v in face_backbone(arch, embedding_dim=embedding_dim,
                                                           image_size=image_size).state_dict().items()}


@pytest.mark.parametrize("arch", FACE_BACKBONES)
def test_state_dict_names_and_shapes_are_arcface_torchs(arch):
    shapes = _shapes(arch)
    lines = "".join(f"{name}:{shape}\n" for name, shape in shapes.items())
    assert (len(shapes), hashlib.sha256(lines.encode()).hexdigest()) == ARCFACE_TORCH[arch]


def test_a_few_keys_as_the_arcface_torch_source_names_them():
    r18, mbf = _shapes("iresnet18"), _shapes("mobilefacenet")
    assert r18["conv1.weight"] == [64, 3, 3, 3] and r18["prelu.weight"] == [64]
    assert r18["layer1.0.downsample.0.weight"] == [64, 64, 1, 1] and r18["layer4.1.bn3.running_var"] == [512]
    assert r18["fc.weight"] == [512, 512 * 7 * 7] and r18["features.running_mean"] == [512]
    assert mbf["layers.0.layers.0.weight"] == [128, 3, 3, 3] and mbf["layers.1.layers.0.weight"] == [128, 2, 3, 3]
    assert mbf["features.layers.0.layers.0.weight"] == [512, 1, 7, 7] and mbf["features.layers.2.weight"] == [512, 512]
    assert get_args(FaceBackboneName) == FACE_BACKBONES  # the params choices are the modules built


@pytest.fixture(scope="module")
def r18_file(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("iresnet18", small_input_stem=False, embedding_dim=512, image_size=112).eval()
    path = tmp_path_factory.mktemp("pretrained") / "backbone.pth"
    torch.save(model.state_dict(), path)
    return path, model


def test_backbone_pth_loads_strictly_and_embeds_112px_to_512(r18_file):
    path, reference = r18_file
    model = build_from_config({"arch": "iresnet18", "small_input_stem": False, "embedding_dim": 512,
                               "image_size": 112, "task": "verification"})
    load_backbone(model, path, "iresnet18")
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        out = model.eval()(x)
        assert out.shape == (2, 512) and torch.equal(out, reference(x))


def test_nested_and_ddp_prefixed_state_dicts_load(r18_file, tmp_path):
    path, reference = r18_file
    state = torch.load(path, weights_only=True)
    torch.save({"state_dict_backbone": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, tmp_path / "ck.pt")
    model = face_backbone("iresnet18", embedding_dim=512, image_size=112)
    load_backbone(model, tmp_path / "ck.pt", "iresnet18")
    assert torch.equal(model.state_dict()["fc.weight"], reference.state_dict()["fc.weight"])


def _refused(model, path, arch="iresnet18") -> str:
    with pytest.raises(FairquantError) as error:
        load_backbone(model, path, arch)
    assert "\n" not in str(error.value)
    return str(error.value)


def test_bad_pretrained_files_are_refused(r18_file, tmp_path):
    path, _ = r18_file
    small = face_backbone("iresnet18", embedding_dim=128, image_size=112)
    assert "layer fc.weight has shape [512, 25088] in the file but [128, 25088]" in _refused(small, path)
    assert "backbone.pth: pretrained weights not found; set verify.model.pretrained" in _refused(
        small, tmp_path / "backbone.pth")
    mbf = face_backbone("mobilefacenet", embedding_dim=512, image_size=112)
    assert "tensors of mobilefacenet are missing (first: conv_sep.layers.0.weight)" in _refused(
        mbf, path, "mobilefacenet")
    (tmp_path / "pickled.pth").write_bytes(pickle.dumps(np.dtype))  # code, not tensors: weights_only refuses it
    assert "not a loadable state dict with weights_only=True" in _refused(small, tmp_path / "pickled.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    assert "not a state dict (name -> tensor)" in _refused(small, tmp_path / "list.pth")


def test_face_backbones_refuse_classifier_use_and_odd_sizes():
    with pytest.raises(FairquantError, match="iresnet18 is a face-recognition backbone.*verify.model.arch"):
        build_model("iresnet18", small_input_stem=False)
    with pytest.raises(FairquantError, match=r"verify.data.image_size=40: .*multiple of 16"):
        build_model("mobilefacenet", small_input_stem=False, embedding_dim=64, image_size=40,
                    image_size_key="verify.data.image_size")


def test_params_cross_checks():
    with pytest.raises(ValueError, match="verify.train.epochs is 0 .* verify.model.pretrained is null"):
        VerifyParams(train={"epochs": 0})
    with pytest.raises(ValueError, match="verify.model.arch=iresnet50 needs a multiple of 16"):
        VerifyParams(model={"arch": "iresnet50"}, data={"image_size": 24})
    audit = VerifyParams(train={"epochs": 0}, model={"arch": "iresnet100", "pretrained": "b.pth", "embedding_dim": 512},
                         data={"image_size": 112})
    assert audit.train.epochs == 0 and audit.model.arch == "iresnet100"


def _inputs(tmp_path, size=32, n=8):
    from fairquant.io import write_images, write_json
    from fairquant.verify.variants import VerificationData

    images = np.random.default_rng(0).integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    (tmp_path / "cal" / "train").mkdir(parents=True)
    write_images(tmp_path / "cal" / "train" / "images.npy", images)
    write_json(tmp_path / "cal" / "train" / "info.json", {"set": "train", "size": n})
    return VerificationData(images, np.arange(n), np.arange(n) % 4, tmp_path / "cal", size)


def _compress(arch, tmp_path, specs, kernels):
    from fairquant.verify.variants import build_variant

    torch.manual_seed(0)
    config = {"kind": "fp32", "name": "fp32", "arch": arch, "small_input_stem": False, "embedding_dim": 32,
              "image_size": 32, "task": "verification"}
    model = build_from_config(config).eval()
    data = _inputs(tmp_path)
    params = Params().model_copy(update={
        "latency": Params().latency.model_copy(update={"batch": 8}),
        "quantize_ptq": Params().quantize_ptq.model_copy(update={"kernels": kernels})})
    head = centroid_head(model, data.train_images, data.train_rows, data.identities)
    assert head["weight"].shape == (4, 32) and torch.allclose(head["weight"].norm(dim=1), torch.ones(4))
    return model, [build_variant(spec, model, config, head, params, data, tmp_path / "live", seed=0) for spec in specs]


@pytest.mark.parametrize("arch", ["iresnet18", "mobilefacenet"])
def test_the_verification_compressors_take_the_backbones(arch, tmp_path):
    from fairquant.compress import fakequant
    from fairquant.verify.variants import VariantSpec

    model, [(state, variant)] = _compress(arch, tmp_path, [VariantSpec("ptq", 4, "train")], "simulated")
    assert variant["size_bytes"] < variant["fp32_size_bytes"] / 6
    assert variant["kernels"] == "simulated" and variant["scheme"]["bits"] == 4
    quantized = fakequant.quantize_model(model, Params().quantize_ptq.scheme())
    quantized.load_state_dict(state)
    with torch.no_grad():
        assert quantized.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 32)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["iresnet18", "mobilefacenet"])
def test_int8_kmeans_and_pruning_with_the_centroid_head(arch, tmp_path):
    """About two minutes each on 2 cores (torch.export and the x86 int8 lowering; k-means over every weight;
    pruning fine-tunes one epoch on the margin loss with the head of identity centres)."""
    from fairquant.verify.variants import VariantSpec

    specs = [VariantSpec("ptq", 8, "train"), VariantSpec("kmeans"), VariantSpec("prune")]
    _, made = _compress(arch, tmp_path, specs, "auto")
    (_, int8_variant), (_, kmeans_variant), (_, pruned) = made
    assert int8_variant["kernels"] == "int8" and int8_variant["int8_check"]["sqnr_db"] > 15
    assert kmeans_variant["size_bytes"] < kmeans_variant["fp32_size_bytes"]
    assert pruned["kind"] == "pruned" and (tmp_path / "live" / "prune").is_dir()


def test_fp32_head_prefers_the_trained_head_and_computes_centres_only_when_needed(tmp_path):
    model = face_backbone("mobilefacenet", embedding_dim=16, image_size=32).eval()
    data = _inputs(tmp_path)
    args = (model, data.train_images, data.train_rows, data.identities)
    assert fp32_head(tmp_path / "fp32", *args, needed=False) is None
    assert fp32_head(tmp_path / "fp32", *args, needed=True)["weight"].shape == (4, 16)
    save_variant(tmp_path / "fp32", model.state_dict(), {"name": "fp32"}, head={"weight": torch.ones(4, 16)})
    assert (tmp_path / "fp32" / HEAD).is_file()
    assert torch.equal(fp32_head(tmp_path / "fp32", *args, needed=False)["weight"], torch.ones(4, 16))
