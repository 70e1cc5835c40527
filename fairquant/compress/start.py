"""What every compression stage does before its method runs, in one order: params loaded and checked, outputs
refused if they cannot be written, the prepared data checked against the params, the seed chain set and the fp32
model loaded and checked. A stage's own work starts only after all of it passed."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from torch import nn

from fairquant.compress.checkpoints import load_fp32
from fairquant.data.prepared import check_prepared
from fairquant.io import check_outputs
from fairquant.params import Params, load_params
from fairquant.training import derived_seed, seed_everything


class CompressionStart(NamedTuple):
    params: Params  # the whole study's
    section: Any  # the compressor's settings, with the sweep point's values when one is given
    seed: int  # this training seed's chain: derived_seed(fp32 seed, section.seed)
    model: nn.Module  # the fp32 model, loaded and checked against params
    fp32_config: dict


def start_compression(kind: str, *, seed: int, model_dir: Path, point: str | None, params_file: Path,
                      outputs: dict[str, Path], data: Path | None = None) -> CompressionStart:
    """Refuse bad input before any work (params, ``outputs`` by option name, ``data``), then seed and load."""
    params = load_params(params_file)
    check_outputs(folders=outputs)
    section = params.section_for(kind, point)
    if data is not None:
        check_prepared(data, params, params_file=params_file)
    run_seed = derived_seed(seed, section.seed)
    seed_everything(run_seed, getattr(section, "threads", 0))
    model, fp32_config = load_fp32(model_dir, params=params, params_file=params_file)
    return CompressionStart(params, section, run_seed, model, fp32_config)
