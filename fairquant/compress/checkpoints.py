"""Stored variants: the fp32 reference and every compressed model as a model folder (checkpoint + info.json).

What every compressor stage needs to read the fp32 model and write its own variant, without importing the
other compressors (so that an edit to one compressor re-runs only its own stages). The fp32 kind registers here;
each compressor module registers its own kinds (:mod:`fairquant.compress.registry`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError
from torch import nn

from fairquant.compress import registry
from fairquant.compress.registry import VariantKind
from fairquant.errors import FairquantError
from fairquant.io import load_checkpoint
from fairquant.models import build_from_config, first_non_finite

CHECKPOINT = "model.pt"
RERUN = "re-run its stage (dvc repro -f -s <stage>)"


class WeightsMismatch(ValueError):
    """A stored state dict that does not fit the module its config describes (caught by :func:`rebuild_stored`)."""


def _mismatch(model: nn.Module, state_dict: dict) -> str:
    """The first tensor that keeps ``state_dict`` from loading into ``model``, in words."""
    own = model.state_dict()
    missing = [name for name in own if name not in state_dict]
    extra = [name for name in state_dict if name not in own]
    if missing:
        return f"no tensor {missing[0]!r} ({len(missing)} missing, {len(extra)} not in the model)"
    if extra:
        return f"tensor {extra[0]!r} is not in the model ({len(extra)} such)"
    for name, tensor in own.items():
        found = getattr(state_dict[name], "shape", None)
        if found is None or tuple(found) != tuple(tensor.shape):
            shape = None if found is None else tuple(found)
            return f"layer {name!r} has shape {shape} but the model needs {tuple(tensor.shape)}"
    return "a tensor the model cannot take"


def _load_strict(model: nn.Module, state_dict: dict) -> nn.Module:
    if not isinstance(state_dict, dict):
        raise WeightsMismatch(f"state_dict is a {type(state_dict).__name__}, not a mapping of layer names to tensors")
    try:
        model.load_state_dict(state_dict, strict=True)
    except (RuntimeError, TypeError, AttributeError, KeyError):
        raise WeightsMismatch(_mismatch(model, state_dict)) from None
    return model.eval()


def build_fp32(config: dict, state_dict: dict) -> nn.Module:
    return _load_strict(build_from_config(config), state_dict)


def untrained(config: dict) -> nn.Module:
    """The stored variant's architecture, untrained: what a compressor's rebuild loads the stored state into."""
    return build_from_config(config).eval()


def load_into(model: nn.Module, state_dict: dict) -> nn.Module:
    return _load_strict(model, state_dict)


def _first_problem(exc: ValidationError) -> str:
    """A stored config's first schema error, in words: the key, and the value found where it is not the type."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "missing":
        return f"lacks {where!r}"
    message = error["msg"].removeprefix("Value error, ")
    if not where:  # a check across keys (the name against the scheme): its message says which
        return f"is inconsistent: {message}"
    return f"has {where} {error['input']!r}: {message[:1].lower()}{message[1:]}"


def check_config(path: str | Path, config: dict) -> registry.StoredConfig:
    """The stored config of the checkpoint at ``path``, checked against its kind's schema before anything is built
    from it (an edited or foreign config is refused in one line, naming the key and the value found)."""
    kind_name = config.get("kind")
    if not isinstance(kind_name, str):
        raise FairquantError(f"{path}: its config has kind {kind_name!r}, not a variant kind; the file is damaged or "
                             f"from another fairquant version: {RERUN}")
    kind = registry.lookup(kind_name)
    try:
        return kind.config.model_validate(config, strict=True)
    except ValidationError as exc:
        raise FairquantError(f"{path}: its config {_first_problem(exc)}; the file is damaged, edited or from another "
                             f"fairquant version: {RERUN}") from None


def rebuild_stored(path: str | Path, config: dict, state_dict: dict) -> nn.Module:
    """The module of the checkpoint at ``path`` (its config and weights), rebuilt by its kind's handler; a config
    that breaks its kind's schema, or weights that do not fit the architecture the config names (a damaged file, or
    a config and weights from two runs), are refused in one line naming the first key or tensor that differs."""
    check_config(path, config)
    kind = registry.lookup(config["kind"])
    try:
        return kind.rebuild(config, state_dict)
    except WeightsMismatch as exc:
        raise FairquantError(f"{path}: its weights do not fit the {config.get('arch', '?')} {config['kind']} model its "
                             f"config describes: {exc}; the file is damaged or mixes two runs: {RERUN}") from None


def fp32_size_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values() if t.is_floating_point())


FP32 = registry.register(VariantKind("fp32", rebuild=build_fp32,
                                     size_bytes=lambda config, model: fp32_size_bytes(model), kernels="fp32"))


def check_against_params(path: Path, config: dict, params, params_file: str | Path) -> None:
    """A stored fp32 model against the params the stage runs under: the input stem changes the forward pass without
    changing a weight's shape, and the image size is what every image the stage reads must have, so a model from
    other params would load and run silently. A classifier's architecture may be any of the sweep's; a verification
    model's is verify.model.arch, with its embedding size."""
    if config.get("task") == "verification":
        checks = (("verify.model.arch", config.get("arch"), params.verify.model.arch),
                  ("verify.model.small_input_stem", config.get("small_input_stem"), params.verify.model.small_input_stem),
                  ("verify.model.embedding_dim", config.get("embedding_dim"), params.verify.model.embedding_dim),
                  ("verify.data.image_size", config.get("image_size"), params.verify.data.image_size))
        rerun = "re-run verify_train (dvc repro -f -s verify_train)"
    else:
        checks = (("model.small_input_stem", config.get("small_input_stem"), params.model.small_input_stem),
                  ("prepare.image_size", config.get("image_size"), params.prepare.image_size))
        rerun = "re-run finetune (dvc repro -f -s finetune@<seed>)"
    for key, stored, wanted in checks:
        if stored != wanted:
            raise FairquantError(f"{path} was made with {key.rsplit('.', 1)[1]} {stored!r} but "
                                 f"{Path(params_file).name} has {key} {wanted!r}; the model is from other params: "
                                 f"{rerun} or put {key} back")


def load_fp32(model_dir: str | Path, *, params=None, params_file: str | Path = "params.yaml") -> tuple[nn.Module, dict]:
    """The stored fp32 model and its config; with ``params`` (the stage's), its input stem checked against them
    (``params_file`` is named in the message)."""
    path = Path(model_dir) / CHECKPOINT
    checkpoint = load_checkpoint(path)
    if checkpoint["config"]["kind"] != FP32.name:
        raise FairquantError(f"{model_dir} holds a {checkpoint['config']['kind']} model; compressors start from fp32")
    damaged = first_non_finite(checkpoint["state_dict"])
    if damaged is not None:
        raise FairquantError(f"{path}: layer {damaged!r} holds NaN or infinite values; the model is damaged or "
                             "diverged: re-run its stage (dvc repro -f -s finetune@<seed>)")
    model = rebuild_stored(path, checkpoint["config"], checkpoint["state_dict"])
    if params is not None:
        check_against_params(path, checkpoint["config"], params, params_file)
    return model, checkpoint["config"]


def base_config(fp32_config: dict, kind: str, name: str, **extra) -> dict:
    """A compressed variant's config: the fp32 model's identity (minus its training log) plus its own.

    When the fp32 model was itself fine-tuned by a remedy (``mitigation`` in its config, e.g. fairalm), the
    name says both parts: fairalm+ptq-w8a8-train."""
    keep = {k: v for k, v in fp32_config.items() if k not in ("finetune", "kind", "name")}
    if fp32_config.get("mitigation"):
        name = f"{fp32_config['mitigation']['method']}+{name}"
    return {**keep, "kind": kind, "name": name, **extra}


HEAD = "head.pt"  # a verification model's margin head (identity centres), for compression fine-tuning


def write_variant(folder: Path, state_dict: dict, config: dict, head: dict | None = None) -> None:
    """A model folder's files, into ``folder`` (a temporary folder the caller moves in place when all succeeded)."""
    from fairquant.io import save_checkpoint, write_json

    save_checkpoint(folder / CHECKPOINT, state_dict, config)
    if head is not None:
        save_checkpoint(folder / HEAD, head, {"kind": "margin-head", "of": config["name"]})
    write_json(folder / "info.json", config)


def save_variant(out: str | Path, state_dict: dict, config: dict, head: dict | None = None) -> None:
    from fairquant.io import atomic_dir

    with atomic_dir(out) as tmp:
        write_variant(tmp, state_dict, config, head)
