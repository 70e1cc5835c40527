"""The int8 kernel check's rule, by hand (found in review: a constant output could pass; a zero signal crashed)."""

import math

import pytest
import torch

from fairquant.compress import int8


def check(sqnr: float, quant: float, corr: float) -> int8.Int8Check:
    return int8.Int8Check("AVX2", "AVX2", True, 64, sqnr, quant, 0.01, 0.02, 5.0, corr, "held-out validation")


def test_relative_sqnr_and_correlation_must_both_hold():
    assert check(31.4, 30.6, 0.9996).passed  # the default model on this AVX2 machine, measured
    assert not check(20.0, 30.6, 0.999).passed  # the kernels add far more error than quantization
    # an output with no information (a constant near the logits' mean) within 5 dB of a coarse quantization
    assert not check(17.8, 21.5, 0.0).passed


def test_correlation_and_sqnr_edge_cases():
    x = torch.linspace(-1, 1, 50)
    assert int8.correlation(x, 2 * x + 3) == pytest.approx(1.0)
    assert int8.correlation(x, torch.full_like(x, 0.5)) == 0.0
    assert int8.sqnr_db(torch.zeros(8), torch.ones(8)) == -math.inf
    assert int8.sqnr_db(x, x) == math.inf


def test_reduce_range_setting_is_auto_or_a_bool():
    assert int8.reduce_range_for(True) is True and int8.reduce_range_for(False) is False
    assert int8.reduce_range_for("auto") is (not int8.cpu_int8().vnni)
    with pytest.raises(ValueError, match="'false'"):
        int8.reduce_range_for("false")
