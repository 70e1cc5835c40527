"""The verification branch on several processes (fairquant.distributed, gloo on the CPU): 2 processes x a batch of
b rows train what 1 process x 2b trains, through the real entry points: the embedding network with its margin head
(train_embedding: the stage's own launch, the memory-mapped store passed by file), QuantFace (as a torchrun rank
runs it: every rank calls the entry point inside one process group) and a compressor's margin-loss fine-tune
(margin_finetuner, pruning's masks attached, BatchNorm trained over the global batch)."""

import copy
import os

import numpy as np
import pytest
import torch

from fairquant import distributed
from fairquant.compress import fakequant, pruning
from fairquant.io import image_store_writer, read_images, read_json
from fairquant.models import build_model
from fairquant.params import DistributedParams, Params, QuantFaceParams, TrainingParams, VerifyTrainParams
from fairquant.verify.heads import MarginHead
from fairquant.verify.training import margin_finetuner, quantface, train_embedding
from fairquant.verify.variants import quantface_scheme

# max |w_2proc - w_1proc| over the state dict (and the margin head), as tests/test_distributed.py: float32 rounding
# (the ranks sum each batch in another order), which SGD from random weights amplifies: a short last batch of
# 2 x 2 took the embedding test to 0.24 (README: several processes). Measured: see each test's docstring.
WEIGHT_TOLERANCE = 1e-5
LOSS_TOLERANCE = 1e-5  # the last epoch's mean training loss (dvclive's metrics.json), a margin loss of ~2-8: float32
IDENTITIES, WIDTH = 5, 16


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """A 64-row memory-mapped store of 16 px faces; 48 training rows (3 global batches of 16) with identity labels
    0-4. No short last batch: from random weights on random faces, one process's own trajectory is chaotic enough
    that a batch of 4 (2 per rank) lets SGD amplify float rounding past the tolerance (README: several processes)."""
    folder = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(0)
    with image_store_writer(folder / "images.npy", 64, (16, 16, 3)) as writer:
        writer.append(rng.integers(0, 256, (64, 16, 16, 3), dtype=np.uint8))
    rows = np.sort(rng.choice(64, 48, replace=False))
    return read_images(folder / "images.npy"), rows, rng.integers(0, IDENTITIES, 48)


def _network():
    torch.manual_seed(0)
    return build_model("face_resnet10", small_input_stem=False, embedding_dim=WIDTH, image_size=16)


def _differences(one: dict, two: dict) -> float:
    assert one.keys() == two.keys()  # the same checkpoint format: no 'module.' prefix, no extra keys
    return max(float((one[k].double() - two[k].double()).abs().max()) for k in one if one[k].is_floating_point())


def _moved(trained: dict, initial: dict) -> float:
    return max(float((trained[k].double() - initial[k].double()).abs().max()) for k in trained
               if trained[k].is_floating_point())


def _loss(live) -> float:
    return read_json(live / "metrics.json")["train"]["loss"]


@pytest.mark.slow  # two spawned ranks import torch and train
def test_two_processes_train_the_one_process_embedding_and_head(faces, tmp_path):
    """verify_train's training: softmax warm-up (1 epoch) then CosFace, BatchNorm over the global batch, the head
    trained under DDP with the network; global batch 16 = 2 x 8, augmentation on, 2 epochs (6 steps).
    Measured: max |weight difference| 1.3e-6, head 1.7e-6, loss 1.9e-6."""
    images, rows, identities = faces
    params = VerifyTrainParams(epochs=2, warmup_epochs=1, batch_size=16, lr=0.01, scale=16.0, augment=True,
                               device="cpu")
    trained = {}
    for nproc in (1, 2):
        model, head = train_embedding(_network(), images, rows, identities, params, torch.device("cpu"),
                                      tmp_path / f"live{nproc}", seed=3, processes=DistributedParams(nproc=nproc))
        trained[nproc] = (model.state_dict(), head.state_dict(), _loss(tmp_path / f"live{nproc}"))
    weight, head, loss = (_differences(trained[1][0], trained[2][0]), _differences(trained[1][1], trained[2][1]),
                          abs(trained[1][2] - trained[2][2]))
    print(f"verify_train: max |weight difference| {weight:.3g}, head {head:.3g}, |loss difference| {loss:.3g}")
    assert weight <= WEIGHT_TOLERANCE and head <= WEIGHT_TOLERANCE and loss <= LOSS_TOLERANCE
    assert _moved(trained[1][0], _network().state_dict()) > 100 * WEIGHT_TOLERANCE  # the test can fail


def _quantface_rank(payload):
    """One rank as torchrun starts it: WORLD_SIZE in the environment, the entry point called with nproc 1 (torchrun's
    count is used), its own log folder (as the stage's temporary one)."""
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    os.environ["WORLD_SIZE"] = str(world)
    # spawn hands the model over in shared memory: each rank trains its own copy, as each torchrun rank builds one
    model = quantface(**dict(payload, quantized=copy.deepcopy(payload["quantized"]),
                             live_dir=payload["live_dir"] / f"rank{rank}"), processes=DistributedParams(nproc=1))
    return {"state": model.state_dict()}


def _quantized(images):
    """W4A4 with QuantFace's scheme (weights per channel, asymmetric), calibrated on ``images``; and its teacher."""
    teacher = _network().eval()
    scheme = quantface_scheme(Params(), 4, "train")
    return fakequant.calibrate(fakequant.quantize_model(teacher, scheme), images), teacher


@pytest.mark.slow  # two spawned ranks import torch and train
def test_quantface_on_two_torchrun_style_ranks_trains_the_one_process_model(faces, tmp_path):
    """QuantFace W4A4 (fake quantization, BatchNorm frozen, the fp32 teacher's embeddings as targets), every rank
    calling the entry point as under torchrun; rank 0's weights against one process'. 2 epochs of 32 images at
    global batch 16 (4 steps), augmentation on. Measured: max |weight difference| 7.5e-9."""
    images = np.array(faces[0][:32])
    # QuantFace's mean squared error moves W4A4 latent weights little: a large rate, so that they move far
    params = QuantFaceParams(epochs=2, batch_size=16, lr=1.0, augment=True, device="cpu")
    quantized, teacher = _quantized(images)
    before = {k: v.clone() for k, v in quantized.state_dict().items()}
    payload = dict(quantized=quantized, teacher=teacher, images=images, params=params, device=torch.device("cpu"),
                   seed=1, label="quantface")
    one = quantface(**dict(payload, quantized=copy.deepcopy(quantized), live_dir=tmp_path / "live1")).state_dict()
    two = distributed.launch(_quantface_rank, dict(payload, live_dir=tmp_path / "live2"),
                             distributed.Plan(2, "gloo", True))["state"]
    weight = _differences(one, two)
    print(f"quantface: max |weight difference| {weight:.3g}")
    assert weight <= WEIGHT_TOLERANCE
    assert _moved(one, before) > 100 * WEIGHT_TOLERANCE


@pytest.mark.slow  # two spawned ranks import torch and train
def test_a_compressors_margin_fine_tune_on_two_processes_trains_the_one_process_model(faces, tmp_path):
    """margin_finetuner as verify_compress's pruning calls it: 50% of the weights masked, BatchNorm trained, the
    fp32 model's head (a copy) trained along; global batch 16 = 2 x 8, 2 epochs (6 steps), augmentation on.
    Measured: max |weight difference| 1.4e-6, loss 1.8e-6."""
    images, rows, identities = faces
    torch.manual_seed(1)
    head_state = MarginHead(WIDTH, IDENTITIES, "cosface", 16.0, 0.2).state_dict()
    train_params = VerifyTrainParams(scale=16.0, margin=0.2)
    params = TrainingParams(epochs=2, batch_size=16, lr=0.01, augment=True, device="cpu")
    trained = {}
    for nproc in (1, 2):
        model = _network()
        pruning.prune_global(model, 0.5)
        finetune = margin_finetuner(images, rows, identities, head_state, train_params, params,
                                    tmp_path / f"live{nproc}", "prune", seed=2, freeze_bn=False,
                                    device=torch.device("cpu"), section="prune",
                                    processes=DistributedParams(nproc=nproc))
        trained[nproc] = (finetune(model).state_dict(), _loss(tmp_path / f"live{nproc}"))
    weight, loss = _differences(trained[1][0], trained[2][0]), abs(trained[1][1] - trained[2][1])
    print(f"prune fine-tune: max |weight difference| {weight:.3g}, |loss difference| {loss:.3g}")
    assert weight <= WEIGHT_TOLERANCE and loss <= LOSS_TOLERANCE
    masks = [k for k in trained[2][0] if k.endswith("weight_mask")]
    assert masks and all(torch.equal(trained[1][0][k], trained[2][0][k]) for k in masks)
    initial = _network()
    pruning.prune_global(initial, 0.5)
    assert _moved(trained[1][0], initial.state_dict()) > 100 * WEIGHT_TOLERANCE
