"""QConfig keeps relay.quantize's option names and defaults; impossible settings name the option."""

from __future__ import annotations

import pytest

from qbuild.errors import QbuildError
from qbuild.quantize import DEFAULTS, QConfig, current_qconfig, make, options, qconfig

RELAY_DEFAULTS = {
    "nbit_input": 8,
    "nbit_weight": 8,
    "nbit_activation": 32,
    "dtype_input": "int8",
    "dtype_weight": "int8",
    "dtype_activation": "int32",
    "calibrate_mode": "global_scale",
    "global_scale": 8.0,
    "weight_scale": "power2",
    "skip_dense_layer": True,
    "skip_conv_layers": (0,),
    "do_simulation": False,
    "round_for_shift": True,
    "debug_enabled_ops": None,
    "rounding": "UPWARD",
    "calibrate_chunk_by": -1,
    "partition_conversions": "disabled",
}


def test_defaults_are_relay_quantizes():
    for name, value in RELAY_DEFAULTS.items():
        assert getattr(DEFAULTS, name) == value, name
    listed = {o["name"]: o["default"] for o in options()}
    assert set(RELAY_DEFAULTS) <= set(listed)
    assert listed["per_channel_weights"] is False  # qbuild's addition, off by default


def test_qconfig_context_is_current_inside_the_block_and_nests():
    assert current_qconfig() == DEFAULTS
    with qconfig(nbit_activation=16, dtype_activation="int16") as outer:
        assert current_qconfig() is outer
        with qconfig(calibrate_mode="max") as inner:
            assert current_qconfig() is inner and inner.nbit_activation == 32
        assert current_qconfig() is outer
    assert current_qconfig() == DEFAULTS


@pytest.mark.parametrize(
    "overrides, option, fix",
    [
        ({"nbit_weight": 0}, "nbit_weight", "1 or more bits"),
        ({"nbit_activation": 1}, "nbit_activation", "nbit_input=1"),
        ({"nbit_edge": 0}, "nbit_edge", "None"),
        ({"subbyte_kernel": "popcount"}, "subbyte_kernel", "bitserial"),
        ({"bias_correction": True}, "bias_correction", "calibrate_mode"),
        ({"weight_rounding": "adaround"}, "weight_rounding", "gptq"),
        ({"weight_rounding": "gptq"}, "weight_rounding", "calibrate_mode"),
        ({"nbit_input": 16, "dtype_input": "int16"}, "nbit_input", "at most 8 bits"),
        ({"dtype_weight": "int4"}, "dtype_weight", "int8"),
        ({"nbit_activation": 32, "dtype_activation": "int16"}, "nbit_activation", "widen dtype_activation"),
        ({"calibrate_mode": "entropy"}, "calibrate_mode", "kl_divergence"),
        ({"weight_scale": "log"}, "weight_scale", "power2"),
        ({"rounding": "DOWN"}, "rounding", "UPWARD"),
        ({"global_scale": 0.0}, "global_scale", "positive"),
        ({"skip_conv_layers": [-1]}, "skip_conv_layers", "from 0"),
        ({"debug_enabled_ops": ["nn.softmax"]}, "debug_enabled_ops", "nn.conv2d"),
        ({"do_simulation": True}, "do_simulation", "do_simulation=False"),
        ({"partition_conversions": "enabled"}, "partition_conversions", "disabled"),
        ({"calibrate_chunk_by": 0}, "calibrate_chunk_by", "-1"),
        ({"calibrate_percentile": 20.0}, "calibrate_percentile", "99.99"),
    ],
)
def test_impossible_settings_are_rejected_naming_the_option(overrides, option, fix):
    with pytest.raises(QbuildError) as err:
        make(**overrides)
    message = str(err.value)
    assert f"qconfig option {option}=" in message and fix in err.value.fix and "\n" not in message


def test_an_unknown_option_lists_the_known_ones():
    with pytest.raises(QbuildError, match="unknown qconfig option 'nbits'") as err:
        make(nbits=4)
    assert "nbit_weight" in err.value.fix


def test_derived_ranges_follow_relay():
    assert QConfig.qmax(8) == 127 and QConfig.qmax(16) == 32767
    assert DEFAULTS.global_activation_scale(QConfig.qmax(8)) == 8.0 / 128
    assert not DEFAULTS.needs_data and make(calibrate_mode="percentile").needs_data
