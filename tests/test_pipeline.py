"""One experiment end to end (resnet18, 64x64, quick profile): every stage and what it records."""

from __future__ import annotations

import gzip
import hashlib
import json

from qbuild.plan import build_plan
from qbuild.progress import Progress
from qbuild.quantize import DEFAULTS
from qbuild.scheduler import run_plan
from qbuild.schema.kinds import RESULTS as SCHEMA
from qbuild.schema.results import load_result


def test_every_stage_succeeds_and_the_result_is_filed_under_the_machine_id(quick_run):
    root, outcome = quick_run
    record = load_result(outcome.path).record
    assert record["schema"] == SCHEMA
    assert outcome.path == root / record["environment"]["machine_id"] / "resnet18-float-cpu-quick.json"
    assert {name: s["status"] for name, s in record["stages"].items()} == {
        "load": "ok",
        "summarise": "ok",
        "trace": "ok",
        "compile": "ok",
        "verify": "ok",
        "analyse": "ok",
        "bench": "ok",
        "accuracy": "skipped",
    }
    assert record["stages"]["accuracy"]["reason"] == "random weights: accuracy would be meaningless"
    assert all(s["seconds"] >= 0 for s in record["stages"].values())


def test_the_result_records_provenance_target_and_environment(quick_run):
    record = quick_run[1].record
    experiment = record["experiment"]
    assert experiment["weights"] == {
        "kind": "random",
        "source": "seeded init (torch.manual_seed(0))",
        "reason": "requested",
    }
    assert experiment["target"]["name"] == "cpu" and experiment["target"]["spec"]["kind"] == "llvm"
    assert experiment["variant"]["qconfig"] is None
    env = record["environment"]
    assert env["packages"]["apache-tvm"].startswith("0.27")
    assert env["cpu"]["flags"] and env["cpu"]["cores"] >= 1
    assert record["model"]["parameters"] == 11_689_512


def test_the_compiled_model_matches_pytorch(quick_run):
    correctness = quick_run[1].record["correctness"]
    assert correctness["max_abs_error"] < 1e-4 * max(1.0, correctness["max_abs_reference"])
    assert correctness["top1_agreement"] == 1.0
    assert quick_run[1].record["compile"]["seconds"] > 0


def test_the_generated_code_is_censused_and_kept_as_artifacts(quick_run):
    root, outcome = quick_run
    ir = outcome.record["ir"]
    assert ir["dtype_census"]["counts"]["float32"] > 100
    assert ir["instruction_census"]["families"]["fp FMA (vfmadd/vfmsub)"] > 0
    assert 0 < ir["launch_census"]["kernels"] < 100 and ir["launch_census"]["in_cuda_graph"] == 0
    for suffix in ("ll", "s", "relax.py", "vm"):
        entry = ir["artifacts"][suffix]
        data = gzip.decompress((outcome.path.parent / entry["path"]).read_bytes())
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]


def test_the_benchmark_follows_the_profile_protocol(quick_run):
    latency = quick_run[1].record["latency"]
    assert latency["protocol"]["iterations"] == 2 and latency["protocol"]["executions"] == 3
    assert len(latency["samples_ms"]) == latency["iterations_run"]
    assert all(len(it) == latency["executions_run"] for it in latency["samples_ms"])
    assert latency["summary"]["median_ms"] > 0


def test_a_rerun_with_unchanged_inputs_is_skipped_and_force_runs_it_again(quick_run):
    root, outcome = quick_run
    plan = build_plan(
        models=["resnet18"], variants=["float"], targets=["cpu"], profile="quick", weights="random", kernels=["builtin"]
    )
    (again,) = run_plan(plan, root, progress=Progress(quiet=True))
    assert again.skipped and again.record == outcome.record


def test_a_corrupt_previous_result_is_kept_aside_and_the_experiment_runs_again(quick_run, tmp_path):
    root, outcome = quick_run
    plan = build_plan(
        models=["resnet18"], variants=["float"], targets=["cpu"], profile="quick", weights="random", kernels=["builtin"]
    )
    broken = tmp_path / outcome.path.parent.name / outcome.path.name
    broken.parent.mkdir()
    broken.write_text("{ half a file")
    (fresh,) = run_plan(plan, tmp_path, progress=Progress(quiet=True))
    assert not fresh.skipped and fresh.record["stages"]["bench"]["status"] == "ok"
    assert broken.with_name(broken.name + ".corrupt").read_text() == "{ half a file"


def test_a_quantized_variant_runs_every_stage_and_reports_its_layers_and_integer_code(quick_results):
    _root, outcomes = quick_results
    record = outcomes["int8-a8"].record
    assert record["stages"]["quantize"]["status"] == "ok" and record["stages"]["bench"]["status"] == "ok"
    assert record["experiment"]["variant"]["qconfig"] == {"nbit_activation": 8, "dtype_activation": "int8"}
    quantization = record["quantization"]
    assert quantization["config"]["dtype_activation"] == "int8"
    assert (quantization["layers_quantized"], quantization["layers_skipped"]) == (19, 2)  # conv 0 and fc skipped
    assert record["correctness"]["cosine_similarity"] > 0.98
    int8_counts = record["ir"]["dtype_census"]["counts"]
    float_counts = outcomes["float"].record["ir"]["dtype_census"]["counts"]
    assert int8_counts["int8"] > float_counts["int8"]
    assert int8_counts["float32"] < float_counts["float32"]


def test_the_pytorch_peer_is_benchmarked_like_a_compiled_model_and_skips_tvms_stages(tmp_path):
    plan = build_plan(models=["resnet18"], variants=["torch-fp32"], targets=["cpu"], profile="quick", weights="random")
    (outcome,) = run_plan(plan, tmp_path, progress=Progress(quiet=True))
    stages = {name: stage["status"] for name, stage in outcome.record["stages"].items()}
    assert stages == {
        "load": "ok",
        "summarise": "ok",
        "compile": "ok",
        "verify": "skipped",
        "analyse": "skipped",
        "bench": "ok",
        "accuracy": "skipped",
    }
    assert outcome.record["compile"]["peer"]["engine"] == "torch"
    assert outcome.record["experiment"]["variant"]["engine"] == "torch"
    assert outcome.record["latency"]["summary"]["n"] == 6


def test_each_result_records_what_the_report_judges_it_by(quick_results):
    _root, outcomes = quick_results
    int8, float_ = outcomes["int8-a8"].record, outcomes["float"].record
    assert {key: int8["experiment"]["variant"][key] for key in ("precision", "quantized", "in_sweep", "order")} == {
        "precision": "int8",
        "quantized": True,
        "in_sweep": False,
        "order": 1,
    }
    assert float_["experiment"]["variant"]["precision"] == "fp32" and float_["experiment"]["variant"]["order"] == 0
    recorded, defaults = (json.loads(json.dumps(d)) for d in (int8["quantization"]["defaults"], DEFAULTS.to_json()))
    assert recorded == defaults


def test_a_sweep_precision_on_random_weights_rounds_by_gptq_instead_of_learning_and_records_it(quick_results):
    _root, outcomes = quick_results
    w1a1 = outcomes["w1a1"].record
    assert w1a1["experiment"]["weights"]["kind"] == "random"
    assert w1a1["experiment"]["variant"]["qconfig"]["weight_rounding"] == "reconstruct"
    assert w1a1["quantization"]["config"]["weight_rounding"] == "gptq"
    assert w1a1["quantization"]["calibration"]["reconstruction_skipped"] == "random weights"
