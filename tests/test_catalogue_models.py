"""Troubleshooting catalogue: models: checkpoints, user-supplied weights, stored variants and calibration sets (README, Troubleshooting, "Artifacts and the command line"). Each case id
is a README row.

Each case damages one input as a user of a shared DVC remote might find it, runs the stage that reads it as a user
would, and checks the promise: exit status 2, one line on stderr naming the problem and the fix, and nothing
written."""

from pathlib import Path

import numpy as np
import pytest
from conftest import write_prepared

from tests.catalogue_builders import TINY_MODEL, fp32_folder, tiny_config, user_file
from tests.test_stages import assert_clean_failure, run_stage

# ---------------------------------------------------------------- checkpoints and user-supplied weights


class _Code:
    """A pickled object whose loading would run code: it would create the file ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _checkpoint(write):
    def make(path: Path, marker: Path):
        import torch

        from fairquant.io import save_checkpoint
        from fairquant.models import build_model

        state = build_model("face_resnet10", small_input_stem=True).state_dict()
        if write == "text":
            path.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:0\n")
        elif write == "code":
            torch.save({"config": tiny_config(), "state_dict": state, "hook": _Code(marker)}, path)
        elif write == "plain":
            torch.save(state, path)
        elif write == "other-arch":
            save_checkpoint(path, state, tiny_config(arch="resnet18"))
        elif write == "not-finite":
            state["fc.weight"][0, 0] = float("nan")
            save_checkpoint(path, state, tiny_config())
        elif write == "compressed":
            save_checkpoint(path, state, tiny_config(kind="pruned"))
        elif write == "stem-not-bool":
            save_checkpoint(path, state, tiny_config(small_input_stem="yes"))
        elif write == "size-not-int":
            save_checkpoint(path, state, tiny_config(image_size="8"))
        elif write == "no-config-key":
            save_checkpoint(path, state, {k: v for k, v in tiny_config().items() if k != "small_input_stem"})
    return make


CHECKPOINT_CASES = [
    pytest.param(_checkpoint("text"), "not a loadable fairquant checkpoint (UnpicklingError: damaged or not a torch "
                 "file",
                 id="artifact-checkpoint-not-torch"),
    pytest.param(_checkpoint("code"), "holds objects other than tensors, refused unread; only tensors are loaded, "
                 "never code", id="artifact-checkpoint-pickled-code"),
    pytest.param(_checkpoint("plain"), "not a fairquant checkpoint (expected keys state_dict, config)",
                 id="artifact-checkpoint-bare-state-dict"),
    pytest.param(_checkpoint("other-arch"), "its weights do not fit the resnet18 fp32 model its config describes: no "
                 "tensor 'layer1.1.conv1.weight'", id="artifact-checkpoint-config-other-arch"),
    pytest.param(_checkpoint("not-finite"), "model.pt: layer 'fc.weight' holds NaN or infinite values",
                 id="artifact-checkpoint-not-finite"),
    pytest.param(_checkpoint("compressed"), "holds a pruned model; compressors start from fp32",
                 id="artifact-checkpoint-not-fp32"),
    pytest.param(_checkpoint("no-config-key"), "its config lacks 'small_input_stem'",
                 id="artifact-checkpoint-config-key"),
    pytest.param(_checkpoint("stem-not-bool"), "its config has small_input_stem 'yes': input should be a valid boolean",
                 id="artifact-checkpoint-config-stem-not-bool"),
    pytest.param(_checkpoint("size-not-int"), "its config has image_size '8': input should be a valid integer",
                 id="artifact-checkpoint-config-size-not-int"),
]


@pytest.mark.parametrize("make, message", CHECKPOINT_CASES)
def test_compressor_refuses_a_damaged_or_foreign_checkpoint(tmp_path, make, message):
    (tmp_path / "fp32").mkdir()
    marker = tmp_path / "code-ran"
    make(tmp_path / "fp32" / "model.pt", marker)
    out = tmp_path / "ptq"
    result = run_stage("quantize_ptq", ["--model", str(tmp_path / "fp32"), "--calibration", str(tmp_path / "cal"),
                                        "--out", str(out)], tmp_path)
    assert_clean_failure(result, message, out)
    assert not marker.exists()  # the pickled code never ran


def _pretrained(tmp_path: Path, how: str) -> Path:
    import pickle

    import torch

    path = tmp_path / "data" / "pretrained" / "weights.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"conv1.weight": torch.zeros(1), "hook": _Code(tmp_path / "code-ran")}
    if how == "pickle":  # plain pickle (protocol 4): torch also warns about the protocol on the way
        path.write_bytes(pickle.dumps(state, protocol=4))
    elif how == "pickle-global":  # plain pickle (protocol 2): torch names the blocked global it met
        path.write_bytes(pickle.dumps(state, protocol=2))
    elif how == "torch":
        torch.save(state, path)
    else:
        path.write_bytes(b"")
    return path


PRETRAINED_CASES = [
    pytest.param("pickle", True, "weights.pth: not a readable state dict (UnpicklingError: damaged or not a torch "
                 "file)", id="artifact-pretrained-plain-pickle"),
    pytest.param("torch", False, "weights.pth: not a readable state dict (UnpicklingError: it holds objects other than "
                 "tensors, refused unread", id="artifact-pretrained-torch-saved-code"),
    pytest.param("pickle-global", False, "weights.pth: not a readable state dict (UnpicklingError: it holds objects "
                 "other than tensors, refused unread; only tensors are loaded, never code (it holds a pickled global",
                 id="artifact-pretrained-pickled-global"),
    pytest.param("empty", False, "weights.pth: not a readable state dict (EOFError: empty file)",
                 id="artifact-pretrained-empty"),
]


@pytest.mark.parametrize("how, subprocess_run, message", PRETRAINED_CASES)
def test_pretrained_weights_holding_code_are_refused_unread(tmp_path, how, subprocess_run, message):
    """User-supplied weights holding code: refused unread, torch's advice (weights_only=False) not shown, and its
    warning about the pickle protocol not added to the one line (a real interpreter, for the warning)."""
    write_prepared(tmp_path / "data" / "prepared")
    out = tmp_path / "fp32"
    weights = _pretrained(tmp_path, how).relative_to(tmp_path)
    result = run_stage("finetune", ["--data", "data/prepared", "--out", str(out), "--live", str(tmp_path / "live")],
                       tmp_path, {"prepare.image_size": 8, "model.pretrained": str(weights)},
                       subprocess_run=subprocess_run)
    assert_clean_failure(result, message, out)
    assert "weights_only=False" not in result.stderr and not (tmp_path / "code-ran").exists()


# ---------------------------------------------------------------- stored compressed variants read by predict


@pytest.fixture(scope="module")
def stored_variants():
    """A tiny fp32 model's state and three of its compressed variants (simulated W4A4 PTQ, 16-cluster k-means,
    50% pruned), each as (state_dict, config), as the compressor stages store them."""
    from fairquant.compress import fakequant, kmeans, pruning
    from fairquant.models import build_model
    from fairquant.params import QuantSchemeParams

    base = tiny_config(synthetic=True, target="Smiling", protected=["Male"])
    scheme = QuantSchemeParams(bits=4, activation_bits=4)
    images = np.random.default_rng(0).integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)
    ptq = fakequant.calibrate(fakequant.quantize_model(build_model("face_resnet10", small_input_stem=True), scheme),
                              images).eval()
    clustered = kmeans.cluster_model(build_model("face_resnet10", small_input_stem=True), 16, 2).eval()
    pruned = pruning.prune_model(build_model("face_resnet10", small_input_stem=True), 0.5, "one_shot", 1, None).eval()
    return {"prune": (pruned.state_dict(), {**base, "kind": "pruned", "name": "prune-s50",
                                            "sparsity": pruning.weight_sparsity(pruned)}),
            "fp32": (build_model("face_resnet10", small_input_stem=True).state_dict(), base),
            "ptq": (ptq.state_dict(), {**base, "kind": "fakequant", "name": "ptq-w4a4-train",
                                       "scheme": scheme.model_dump(), "calibration": {"set": "train", "size": 8}}),
            "kmeans": (clustered.state_dict(), {**base, "kind": "kmeans", "name": "kmeans-k16", "clusters": 16})}


def _variant(slot, **changes):
    """The stored ``slot`` variant with its config changed (dotted keys reach into the scheme or int8_check)."""
    def make(stored):
        import copy

        state, config = copy.deepcopy(stored[slot])
        for dotted, value in changes.items():
            if dotted == "nan":
                state[value][(0,) * state[value].dim()] = float("nan")
                continue
            if dotted == "dense":  # the pruned zeros of one layer filled in: the weights no longer hold the sparsity
                state[value][state[value] == 0] = 0.01
                continue
            *parents, key = dotted.split(".")
            target = config
            for parent in parents:
                target = target[parent]
            target[key] = value
        return state, config
    return make


_INT8 = {"kind": "ptq-int8", "name": "ptq-w8a8-train", "scheme.bits": 8, "scheme.activation_bits": 8,
         "export_batch": 64, "int8_check": {"reduce_range": True}}

VARIANT_CASES = [
    pytest.param(_variant("ptq", **{"scheme.bits": 8}), "its name 'ptq-w4a4-train' does not say its scheme (bits 8",
                 id="artifact-variant-scheme-edited"),
    pytest.param(_variant("ptq", **{"scheme.bits": "four"}), "its config has scheme.bits 'four': input should be a "
                 "valid integer", id="artifact-variant-scheme-bits-not-int"),
    pytest.param(_variant("ptq", scheme="w4a4"), "its config has scheme 'w4a4': input should be",
                 id="artifact-variant-scheme-not-mapping"),
    pytest.param(_variant("ptq", **{"scheme.observer": "evil"}), "its config has scheme.observer 'evil': input "
                 "should be 'minmax'", id="artifact-variant-scheme-observer-unknown"),
    pytest.param(_variant("kmeans", clusters="sixteen"), "its config has clusters 'sixteen': input should be a valid "
                 "integer", id="artifact-variant-kmeans-clusters-not-int"),
    pytest.param(_variant("kmeans", clusters=32), "its name 'kmeans-k16' does not say its 32 clusters",
                 id="artifact-variant-kmeans-clusters-edited"),
    pytest.param(_variant("prune", sparsity=0.9), "its name 'prune-s50' does not say its sparsity 0.900 (an 's90' part)",
                 id="artifact-variant-prune-sparsity-edited"),
    pytest.param(_variant("prune", name="prune-iter"), "its name 'prune-iter' does not say its sparsity 0.500",
                 id="artifact-variant-prune-name-without-sparsity"),
    pytest.param(_variant("prune", dense="layer4.0.conv2.weight"), "its weights do not fit the face_resnet10 pruned model its "
                 "config describes: they are 0.", id="artifact-variant-prune-weights-dense"),
    pytest.param(_variant("ptq", **{**_INT8, "export_batch": "64"}), "its config has export_batch '64': input should "
                 "be a valid integer", id="artifact-variant-int8-export-batch-not-int"),
    pytest.param(_variant("ptq", **{**_INT8, "int8_check": []}), "its config has int8_check []: input should be",
                 id="artifact-variant-int8-check-not-mapping"),
    pytest.param(_variant("ptq", nan="fc.layer.weight"), "model.pt: tensor 'fc.layer.weight' holds NaN or infinite values",
                 id="artifact-variant-not-finite"),
]


@pytest.mark.parametrize("make, message", VARIANT_CASES)
def test_predict_refuses_an_edited_or_damaged_variant(tmp_path, stored_variants, make, message):
    from fairquant.compress.checkpoints import save_variant

    write_prepared(tmp_path / "data" / "prepared")
    models = tmp_path / "models"
    save_variant(models / "fp32", *stored_variants["fp32"])
    save_variant(models / "ptq", *make(stored_variants))  # the slot predict reads next
    for slot in ("qat", "kmeans", "prune"):
        user_file(models / slot / "model.pt", "not read: predict stops at the damaged slot before")
    out = tmp_path / "pred"
    result = run_stage("predict", ["--data", "data/prepared", "--models", str(models), "--out", str(out)], tmp_path,
                       {"prepare.image_size": 8, "mitigate.before_compression": [], "mitigate.during_prune": [],
                        "mitigate.during_qat": [], "mitigate.during_kmeans": []})
    assert_clean_failure(result, message, out)


# ---------------------------------------------------------------- calibration sets read by the quantizers


def _calibration_set(folder: Path, *, images=None, info=None, cells=None) -> Path:
    """A tiny balanced calibration set as the calibration stage writes it (8 px, two cells), then the damage."""
    from fairquant.io import write_json

    folder.mkdir(parents=True)
    np.save(folder / "images.npy", np.zeros((8, 8, 8, 3), dtype=np.uint8) if images is None else images)
    write_json(folder / "info.json", {"set": "balanced", "size": 8, "image_size": 8} if info is None else info)
    if isinstance(cells, bytes):
        (folder / "cells.npy").write_bytes(cells)
    else:
        np.save(folder / "cells.npy", np.arange(8, dtype=np.int16) % 2 if cells is None else cells,
                allow_pickle=True)
    return folder


def _cells_truncated() -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.arange(8, dtype=np.int16) % 2)
    return buffer.getvalue()[:-5]


CALIBRATION_CASES = [
    pytest.param("balanced", {"images": np.zeros((8, 8, 8, 3), dtype=np.float32)},
                 "images.npy holds float32 (8, 8, 8, 3), not uint8 RGB images of 8x8 px",
                 id="artifact-calibration-images-dtype"),
    pytest.param("balanced", {"images": np.zeros((8, 16, 16, 3), dtype=np.uint8)},
                 "images.npy holds uint8 (8, 16, 16, 3), not uint8 RGB images of 8x8 px (the model's input size)",
                 id="artifact-calibration-images-size"),
    pytest.param("train", {}, "holds the 'balanced' calibration set, not the 'train' set its folder is named after",
                 id="artifact-calibration-set-swapped"),
    pytest.param("balanced", {"model": {"small_input_stem": False}}, "fp32/model.pt was made with small_input_stem False "
                 "but params.yaml has model.small_input_stem True", id="artifact-checkpoint-stem-not-params"),
    pytest.param("balanced", {"model": {"image_size": 16}}, "fp32/model.pt was made with image_size 16 but params.yaml "
                 "has prepare.image_size 8; the model is from other params: re-run finetune",
                 id="artifact-checkpoint-image-size-not-params"),
    pytest.param("balanced", {"info": []}, "info.json: expected a JSON object, found list",
                 id="artifact-calibration-info-not-object"),
    pytest.param("balanced", {"cells": np.array(["a"] * 8, dtype=object)},
                 "cells.npy: not a readable array of cell codes (ValueError)", id="artifact-calibration-cells-pickled"),
    pytest.param("balanced", {"cells": _cells_truncated()}, "cells.npy: not a readable array of cell codes",
                 id="artifact-calibration-cells-truncated"),
    pytest.param("balanced", {"cells": np.arange(12, dtype=np.int16) % 2},
                 "cells.npy holds int16 (12,), not one cell code or name for each of the set's 8 images",
                 id="artifact-calibration-cells-long"),
]


@pytest.mark.parametrize("folder, damage, message", CALIBRATION_CASES)
def test_quantize_ptq_refuses_a_damaged_or_swapped_calibration_set(tmp_path, folder, damage, message):
    calibration = _calibration_set(tmp_path / "calibration" / folder,
                                   **{key: value for key, value in damage.items() if key != "model"})
    fp32 = fp32_folder(tmp_path / "fp32", **damage.get("model", {}))
    out = tmp_path / "ptq"
    result = run_stage("quantize_ptq", ["--model", str(fp32), "--calibration", str(calibration), "--out", str(out)],
                       tmp_path, {"quantize_ptq.kernels": "simulated", "quantize_ptq.bits": 4, **TINY_MODEL,
                                  "quantize_ptq.calibration": folder, "quantize_ptq.calibration_size": 4})
    assert_clean_failure(result, message, out)


VERIFY_CHECKPOINT_CASES = [
    pytest.param({"verify.model.small_input_stem": False}, "fp32/model.pt was made with small_input_stem True but "
                 "params.yaml has verify.model.small_input_stem False; the model is from other params: re-run "
                 "verify_train", id="artifact-verify-checkpoint-not-params"),
]


@pytest.mark.parametrize("params, message", VERIFY_CHECKPOINT_CASES
                         + [pytest.param({"verify.data.image_size": 32}, "was made with image_size 16 but params.yaml "
                                         "has verify.data.image_size 32", id="image-size"),
                            pytest.param({"verify.model.embedding_dim": 64}, "was made with embedding_dim 128 but "
                                         "params.yaml has verify.model.embedding_dim 64", id="embedding-dim")])
def test_verify_compress_refuses_an_fp32_of_other_params(tmp_path, params, message):
    """The verification fp32 was loaded without its params: another stem, size or embedding ran silently."""
    from fairquant.compress.checkpoints import save_variant
    from fairquant.models import build_model

    fp32 = tmp_path / "verify" / "fp32"
    save_variant(fp32, build_model("face_resnet10", small_input_stem=True, embedding_dim=128).state_dict(),
                 {"kind": "fp32", "name": "fp32", "task": "verification", "arch": "face_resnet10",
                  "small_input_stem": True, "embedding_dim": 128, "image_size": 16, "synthetic": True})
    out, live = tmp_path / "variants", tmp_path / "live"
    result = run_stage("verify_compress", ["--model", str(fp32), "--data", str(tmp_path / "prepared_verify"),
                                           "--out", str(out), "--live", str(live)], tmp_path,
                       {"verify.model.small_input_stem": True, "verify.data.image_size": 16, **params})
    assert_clean_failure(result, message, out)
    assert not live.exists()


CASES = (CHECKPOINT_CASES + PRETRAINED_CASES + VARIANT_CASES + CALIBRATION_CASES + VERIFY_CHECKPOINT_CASES)
