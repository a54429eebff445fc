"""The plan: which builds each variant gets, and how they are named."""

from __future__ import annotations

import pytest

from qbuild.errors import QbuildError
from qbuild.plan import STUDY_VARIANTS, build_plan


def test_the_study_variants_are_also_built_untuned_and_everything_else_builtin_only():
    plan = build_plan(["resnet18"], None, ["cpu"], "quick", "random")
    kernels = {}
    for experiment in plan:
        kernels.setdefault(experiment.variant.name, set()).add(experiment.kernels)
    for name, sets in kernels.items():
        if name in STUDY_VARIANTS:
            assert sets == {"builtin", "untuned"}
        elif name.startswith(("torch-", "ort-", "openvino-")):
            assert sets == {None}, "a peer runs its own kernels"
        else:
            assert sets == {"builtin"}


def test_untuned_builds_are_named_apart_and_record_their_kernel_set():
    plan = build_plan(["resnet18"], ["float"], ["cpu"], "quick", "random", kernels=["untuned", "builtin"])
    ids = sorted(e.id for e in plan)
    assert ids == ["resnet18-float-cpu-quick", "resnet18-float-cpu-untuned-quick"]
    assert {e.to_json()["kernels"] for e in plan} == {"untuned", "builtin"}


def test_an_unknown_kernel_set_is_refused_before_any_work():
    with pytest.raises(QbuildError, match="unknown kernel set 'fast'"):
        build_plan(["resnet18"], ["float"], ["cpu"], "quick", "random", kernels=["fast"])


def test_tuned_kernels_without_a_tuning_database_are_refused_before_any_work_naming_the_fix():
    with pytest.raises(QbuildError, match="no tuning database for this machine.*fix: run `nox -s tune`"):
        build_plan(["resnet18"], ["float"], ["cpu"], "quick", "random", kernels=["tuned"])


def test_the_default_plan_sweeps_the_bit_widths_with_mixed_settings():
    plan = build_plan(["resnet18"], None, ["cpu"], "quick", "random")
    sweep = {e.variant.name: e.variant.config() for e in plan if e.variant.name.startswith("w")}
    assert set(sweep) == {"w8a8", "w4a8", "w2a8", "w4a4", "w2a2", "w1a1"}
    assert (sweep["w2a8"].nbit_weight, sweep["w2a8"].nbit_input) == (2, 8)
    assert all(config.nbit_edge == 8 for config in sweep.values())


def test_the_import_variants_are_integer_cpu_builds_of_a_model_another_tool_quantized():
    plan = build_plan(["resnet18"], ["import-ort-qdq", "import-nncf-qdq"], ["cpu"], "quick", "random")
    built = [(e.variant.imported_from, e.variant.precision, e.kernels, e.variant.targets) for e in plan]
    assert built == [("onnxruntime", "int8", "builtin", ("cpu",)), ("nncf", "int8", "builtin", ("cpu",))]
