"""Small inputs the catalogue tests share: a user's stray file, a tiny stored fp32 model and its config."""

from pathlib import Path


def user_file(path: Path, text: str = "mine") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def tiny_config(**changes):
    return {"kind": "fp32", "name": "fp32", "arch": "face_resnet10", "small_input_stem": True, "image_size": 8,
            **changes}


TINY_MODEL = {"prepare.image_size": 8, "model.small_input_stem": True}  # the params fp32_folder's model is made with


def fp32_folder(folder: Path, **changes) -> Path:
    """A tiny stored fp32 model (8 px, small input stem) as finetune writes it."""
    from fairquant.compress.checkpoints import save_variant
    from fairquant.models import build_model

    save_variant(folder, build_model("face_resnet10", small_input_stem=True).state_dict(),
                 tiny_config(synthetic=True, target="Smiling", protected=["Male"], **changes))
    return folder
