"""Shared entry point: a FairquantError becomes one line on stderr and exit status 2, no traceback."""

from __future__ import annotations

import os
import sys
import warnings

import typer

from fairquant.errors import FairquantError


def run(app: typer.Typer) -> None:
    # torch.export and torchao emit deprecation chatter that buries the stage's own output.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.setdefault("TORCH_LOGS", "-all")
    try:
        app(standalone_mode=False)
    except FairquantError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            print(f"error: {exc.format_message()}", file=sys.stderr)
            raise SystemExit(2) from None
        raise


def fit_logged(model, table, images, protected: list[str], params, live_dir, label: str, freeze_bn: bool = False,
               resume: bool = False):
    """Train ``model`` on the training split with per-epoch curves in dvclive and a rich progress bar.

    ``resume`` continues the curves of an earlier call (iterative pruning's rounds) instead of replacing them."""
    from dvclive import Live
    from rich.progress import Progress

    from fairquant.metrics import group_labels
    from fairquant.models import pick_device
    from fairquant.training import train_classifier

    train, val = table[table["split"] == "train"], table[table["split"] == "val"]
    device = pick_device(params.device)
    with Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None, resume=resume) as live, \
            Progress(transient=True) as progress:
        task = progress.add_task(f"{label} on {device}", total=int(len(train) * params.epochs))

        def log_epoch(log) -> None:
            live.log_metric("train/loss", log.train_loss)
            live.log_metric("train/accuracy", log.train_accuracy)
            live.log_metric("val/accuracy", log.val_accuracy)
            for group, accuracy in log.val_group_accuracy.items():
                live.log_metric(f"val/group_accuracy/{group}", accuracy)
            live.next_step()
            progress.console.print(f"{label} epoch {log.epoch + 1}: loss {log.train_loss:.3f}, "
                                   f"val accuracy {log.val_accuracy:.3f}")

        return train_classifier(
            model, images[train["row"].to_numpy()], train["y_true"].to_numpy(), images[val["row"].to_numpy()],
            val["y_true"].to_numpy(), group_labels(val, protected), params, device,
            on_epoch=log_epoch, on_batch=lambda n: progress.advance(task, n), freeze_bn=freeze_bn)


def compression_finetuner(data, protected: list[str], params, live_dir, label: str, freeze_bn: bool):
    """``finetune(model, round_index=0) -> model`` on the training split, logged to ``live_dir``; None when
    ``params.epochs`` is 0, and then the (declared) log folder is written saying no fine-tuning ran."""
    from fairquant.data.prepare import load_prepared
    from fairquant.io import atomic_dir, write_json

    if not params.epochs:
        with atomic_dir(live_dir) as tmp:
            write_json(tmp / "metrics.json", {"fine_tuned": False})
        return None
    table, images, _ = load_prepared(data)

    def finetune(model, round_index: int = 0):
        return fit_logged(model, table, images, protected, params, live_dir,
                          label if round_index == 0 else f"{label} round {round_index + 1}",
                          freeze_bn=freeze_bn, resume=round_index > 0)

    return finetune
