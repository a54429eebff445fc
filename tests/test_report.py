"""The report renders every page from results JSON, says what is missing, and words each study
claim from the data."""

from __future__ import annotations

import copy
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from qbuild.results import write_result
from qbuild.schema.documents import Goal
from qbuild.schema.layers import describe
from report import rows as report_rows
from report.build import PAGES, build
from report.pages import benchmarks, code, environment, overview, sweep


@pytest.fixture(scope="module")
def site_docs(quick_results, tmp_path_factory):
    root, _outcomes = quick_results
    docs = tmp_path_factory.mktemp("docs")
    build(root, docs)
    return docs


def test_every_page_is_rendered_with_the_chart_loader_and_the_offline_vega_bundle(site_docs):
    for page in PAGES:
        assert (site_docs / page).read_text().startswith("# ")
    assert (site_docs / "assets" / "js" / "charts.js").exists()
    assert "vegaEmbed" in (site_docs / "assets" / "js" / "vega-bundle.js").read_text()[:2_000_000]


def test_pages_never_show_the_absolute_path_of_the_results_they_were_built_from(site_docs, quick_results):
    root, _outcomes = quick_results
    overview_page = (site_docs / "index.md").read_text()
    assert str(Path(root).resolve()) not in overview_page
    assert f"`{Path(root).name}/`" in overview_page


def test_the_dtype_census_table_compares_quantized_with_unquantized(site_docs, quick_results):
    _root, outcomes = quick_results
    page = (site_docs / "code.md").read_text()
    assert "| data type | unquantized | quantized (int8) |" in page
    int8_count = outcomes["int8-a8"].record["ir"]["dtype_census"]["counts"]["int8"]
    assert f"{int8_count:,}" in page
    assert "artifacts/" in page and ".ll.gz" in page


def test_the_code_page_counts_the_kernels_each_build_launches_per_inference(site_docs, quick_results):
    _root, outcomes = quick_results
    page = (site_docs / "code.md").read_text()
    counts = " | ".join(f"{outcomes[v].record['ir']['launch_census']['kernels']:,}" for v in ("float", "int8-a8"))
    assert f"| kernels launched per inference | {counts} |" in page
    assert "CUDA graph" not in page.split("### Kernel launches")[1].split("##")[0], "no GPU in the quick plan"


def test_box_plots_draw_quantiles_and_offer_every_raw_sample_for_download(site_docs, quick_results):
    _root, outcomes = quick_results
    page = (site_docs / "benchmarks.md").read_text()
    chart_id = "latency-resnet18-quick-profile-cpu"  # quick-profile runs get their own plots
    opening = f'<script type="application/json" id="{chart_id}-spec">'
    spec_start = page.index(opening) + len(opening)
    spec = json.loads(page[spec_start : page.index("</script>", spec_start)])
    timed = {name: o for name, o in outcomes.items() if name != "w1a1"}  # w1a1 is on the sweep page's plot
    medians = {v["build"]: v["median"] for v in spec["data"]["values"]}
    assert len(medians) == len(timed)
    for outcome in timed.values():
        label = outcome.record["experiment"]["variant"]["label"]
        samples = [s for it in outcome.record["latency"]["samples_ms"] for s in it]
        assert abs(medians[label] - statistics.median(samples)) < 1e-3
    assert spec["width"] == "container" and spec["layer"][0]["encoding"]["y"]["scale"]["type"] == "log"
    csv_rows = (site_docs / "assets" / "charts" / f"{chart_id}-samples.csv").read_text().splitlines()
    assert len(csv_rows) == 1 + sum(len(it) for o in timed.values() for it in o.record["latency"]["samples_ms"])
    assert f"assets/charts/{chart_id}-samples.csv" in page
    assert (site_docs / "assets" / "charts" / f"{chart_id}.svg").read_text().startswith("<svg")


def _with_latency(record: dict, median_ms: float) -> dict:
    changed = copy.deepcopy(record)
    changed["latency"]["summary"]["median_ms"] = median_ms
    return changed


def test_the_quantized_is_slower_claim_is_worded_from_the_data(quick_results, tmp_path):
    _root, outcomes = quick_results
    float_record, int8_record = outcomes["float"].record, outcomes["int8-a8"].record
    for float_ms, expected in ((1.0, "**holds** here"), (1e6, "**does not hold** here")):
        root = tmp_path / f"r{float_ms}"
        machine = float_record["environment"]["machine_id"]
        write_result(root / machine / "a.json", _with_latency(float_record, float_ms))
        write_result(root / machine / "b.json", _with_latency(int8_record, 100.0))
        docs = tmp_path / f"d{float_ms}"
        build(root, docs)
        assert expected in (docs / "benchmarks.md").read_text()


def test_each_claim_names_the_machine_it_was_measured_on(quick_results, tmp_path):
    _root, outcomes = quick_results
    float_record, int8_record = outcomes["float"].record, outcomes["int8-a8"].record
    root = tmp_path / "results"
    for machine, float_ms in (("fast-int8-box", 1e6), ("slow-int8-box", 1.0)):
        for name, record in (("a", _with_latency(float_record, float_ms)), ("b", _with_latency(int8_record, 100.0))):
            record["environment"]["machine_id"] = machine
            write_result(root / machine / f"{name}.json", record)
    build(root, tmp_path / "docs")
    benchmarks = (tmp_path / "docs" / "benchmarks.md").read_text()
    lines = benchmarks.splitlines()
    claims = {
        line.split("**: ")[0]: lines[i + 1] for i, line in enumerate(lines) if "outperforms the quantized" in line
    }
    assert "**does not hold**" in claims["- **resnet18 (quick profile), cpu (fast-int8-box)"]
    assert "**holds** here" in claims["- **resnet18 (quick profile), cpu (slow-int8-box)"]
    index = (tmp_path / "docs" / "index.md").read_text()
    assert "on cpu (fast-int8-box)**: with qbuild's kernels, unquantized runs in 1.00e+06 ms" in index
    assert "on cpu (slow-int8-box)**: with qbuild's kernels, unquantized runs in 1.00 ms" in index


def _with_kernels(record: dict, median_ms: float, kernels: str = "untuned") -> dict:
    changed = _with_latency(record, median_ms)
    changed["experiment"]["kernels"] = kernels
    changed["id"] = f"{record['id']}-{kernels}"
    return changed


def _benchmarks_page(quick_results, tmp_path, medians: dict[tuple[str, str], float]) -> str:
    """The benchmarks page of the quick float and int8-a8 results under other kernel sets and medians,
    given as {(variant, kernel set): ms}."""
    _root, outcomes = quick_results
    machine = outcomes["float"].record["environment"]["machine_id"]
    root = tmp_path / "results"
    for (variant, kernels), median_ms in medians.items():
        record = outcomes[variant].record
        changed = (
            _with_latency(record, median_ms) if kernels == "builtin" else _with_kernels(record, median_ms, kernels)
        )
        write_result(root / machine / f"{variant}-{kernels}.json", changed)
    build(root, tmp_path / "docs")
    return (tmp_path / "docs" / "benchmarks.md").read_text()


def test_untuned_builds_are_compared_with_builtin_ones_and_the_turnaround_is_worded_from_the_data(
    quick_results, tmp_path
):
    text = _benchmarks_page(
        quick_results,
        tmp_path,
        {
            ("float", "builtin"): 10.0,
            ("int8-a8", "builtin"): 5.0,
            ("float", "untuned"): 100.0,
            ("int8-a8", "untuned"): 200.0,
        },
    )
    assert 'With untuned kernels, "quantized is slower" **holds**' in text
    assert 'With builtin kernels, "quantized is slower" **does not hold**' in text
    assert "| 100.00 ms | 10.00 ms | 10.0x |" in text and "| 200.00 ms | 5.00 ms | 40.0x |" in text


def test_tuned_builds_get_their_own_tables_and_their_gain_over_builtin_is_shown(quick_results, tmp_path):
    text = _benchmarks_page(
        quick_results,
        tmp_path,
        {("float", "builtin"): 10.0, ("int8-a8", "builtin"): 6.0, ("float", "tuned"): 8.0, ("int8-a8", "tuned"): 4.0},
    )
    assert "untuned vs builtin vs tuned kernels" in text
    assert "| 10.00 ms | – | 8.00 ms | 1.25x |" in text and "| 6.00 ms | – | 4.00 ms | 1.50x |" in text
    assert 'With tuned kernels, "quantized is slower" **does not hold** (fastest quantized build: 0.50x' in text
    assert "resnet18 (quick profile), tuned TVM kernels" in text, "tuned builds are a box plot / table of their own"


def test_a_tuning_database_is_summarised_with_its_largest_gains(quick_results, tmp_path):
    from qbuild import tuning_db
    from qbuild.kernels.tiles import ConvTile

    _root, outcomes = quick_results
    root = tmp_path / "results"
    machine = outcomes["float"].record["environment"]["machine_id"]
    write_result(root / machine / "f.json", outcomes["float"].record)
    records = {
        "a": tuning_db.Record(ConvTile(4, 2), "float32 -> float32: out (1, 8, 56, 56, 8)", 2.0, 2.0, 9),
        "b": tuning_db.Record(ConvTile(1, 8, 4), "uint8 x int8 -> int32: out (1, 8, 56, 56, 8)", 1.5, 1.0, 9),
    }
    database = tuning_db.TuningDatabase(
        "machine-x", 5, records, {"date": "2026-11-26T09:00:00", "git": {"commit": "abc1234"}}
    )
    tuning_db.save(database, tmp_path / "tuning" / "machine-x.json")
    build(root, tmp_path / "docs", tmp_path / "tuning")
    text = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert "## Tuning database: machine-x" in text
    assert "timed 18 register tiles of\n2 conv workloads in 5 interleaved rounds" in text
    assert "1 of them beat the default tile" in text and "3.5 ms with the\ndefault tiles, 3.0 ms" in text
    assert text.index(
        "| uint8 x int8 -> int32: out (1, 8, 56, 56, 8) | 1x8/4 | 1.500 ms | 1.000 ms | 1.50x |"
    ) < text.index("| float32 -> float32"), "largest gain first"


def test_a_side_by_side_comparison_is_shown_with_its_goals(quick_results, tmp_path):
    from qbuild import compare

    _root, outcomes = quick_results
    root = tmp_path / "results"
    machine = outcomes["float"].record["environment"]["machine_id"]
    write_result(root / machine / "f.json", outcomes["float"].record)
    document = {
        "schema": compare.SCHEMA,
        "model": "resnet50",
        "rounds": 2,
        "executions": 3,
        "environment": outcomes["float"].record["environment"],
        "errors": {"ort-int8-qdq": "no onnxruntime"},
        "builds": [
            {
                "name": "float",
                "label": "unquantized",
                "engine": "tvm",
                "precision": "fp32",
                "median_ms": 30.0,
                "samples": 6,
                "best_peer": "ort-fp32",
                "ratio_to_best_peer": 1.5,
            },
            {
                "name": "ort-fp32",
                "label": "ONNX Runtime fp32 (peer)",
                "engine": "onnxruntime",
                "precision": "fp32",
                "median_ms": 20.0,
                "samples": 6,
                "best_peer": "ort-fp32",
                "ratio_to_best_peer": 1.0,
            },
        ],
        "targets": [{"numerator": "float", "denominator": "ort-fp32", "goal_at_most": 1.1, "ratio": 1.5, "met": False}],
        "experiments": [],
    }
    compare.save(root, machine, document)
    build(root, tmp_path / "docs")
    text = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert "## Side by side: resnet50" in text
    assert "| unquantized | tvm | fp32 | 30.00 ms | 1.50x (ort-fp32) |" in text
    assert "float / ort-fp32 = **1.50** (goal: at most 1.1; not met)" in text
    assert "ort-int8-qdq: not timed (no onnxruntime)" in text
    flags = document["environment"]["cpu"]["flags"]
    instruction = "`vpdpbusd`" if "avx512_vnni" in flags else "`vpmaddubsw` and widen the pair sums with `vpmaddwd`"
    assert f"qbuild's int8 convs multiply bytes with {instruction}" in text, "the CPU's int8 instruction is named"
    amx_target = {
        "name": "cpu",
        "spec": {"kind": "llvm", "mcpu": "sapphirerapids", "mattr": ["+amx-tile", "+amx-int8"]},
    }
    compare.save(
        root,
        machine,
        {**document, "experiments": [{"id": "resnet50-int8-a8-cpu", "kernels": "builtin", "target": amx_target}]},
    )
    build(root, tmp_path / "docs")
    assert "run on its tile registers (`tdpbssd`" in (tmp_path / "docs" / "benchmarks.md").read_text(), (
        "builds that targeted AMX say so"
    )


def test_a_gpu_side_by_side_comparison_names_the_gpu_and_its_goals(quick_results, tmp_path):
    from qbuild import compare

    _root, outcomes = quick_results
    root = tmp_path / "results"
    environment = {**outcomes["float"].record["environment"], "gpu": "NVIDIA H200"}
    write_result(root / "gpu-machine" / "f.json", outcomes["float"].record)
    document = {
        "schema": compare.SCHEMA,
        "model": "resnet50",
        "target": "cuda",
        "rounds": 2,
        "executions": 3,
        "environment": environment,
        "errors": {},
        "experiments": [],
        "builds": [
            {
                "name": "int8-a8",
                "label": "quantized (int8)",
                "engine": "tvm",
                "precision": "int8",
                "median_ms": 0.9,
                "samples": 6,
                "best_peer": None,
                "ratio_to_best_peer": None,
            }
        ],
        "targets": [
            {
                "numerator": "int8-a8",
                "denominator": "torch-compile-fp16-graphs",
                "goal_at_most": 1.0,
                "ratio": 1.5,
                "met": False,
            }
        ],
    }
    assert compare.save(root, "gpu-machine", document).name == "resnet50-cuda.json"
    build(root, tmp_path / "docs")
    text = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert "## Side by side: resnet50 on the GPU (gpu-machine)" in text and "`qbuild compare --target cuda`" in text
    assert "NVIDIA H200" in text and "multiply bytes" not in text.split("on the GPU (gpu-machine)")[1]
    assert "int8-a8 / torch-compile-fp16-graphs = **1.50** (goal: at most 1.0; not met)" in text


def test_a_side_by_side_file_of_another_schema_is_listed_not_fatal(tmp_path):
    bad = tmp_path / "results" / "m" / "side-by-side" / "x.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"schema": "other"}')
    build(tmp_path / "results", tmp_path / "docs")
    assert "schema 'other', expected one of qbuild.side-by-side/1" in (tmp_path / "docs" / "index.md").read_text()


def test_missing_results_are_explicit_and_name_the_command(tmp_path):
    build(tmp_path / "nothing", tmp_path / "docs")
    for page in ("index.md", "code.md", "benchmarks.md", "accuracy.md", "sweep.md"):
        text = (tmp_path / "docs" / page).read_text()
        assert "No results yet" in text and "nox -s experiments" in text, page


def test_a_corrupt_results_file_is_listed_and_skipped_not_fatal(quick_results, tmp_path):
    root, outcomes = quick_results
    copy_root = tmp_path / "results"
    shutil.copytree(root, copy_root)
    machine = outcomes["float"].path.parent.name
    (copy_root / machine / "broken.json").write_text("{")
    build(copy_root, tmp_path / "docs")
    index = (tmp_path / "docs" / "index.md").read_text()
    assert "Results files that were skipped" in index and "broken.json: corrupt JSON" in index
    assert "resnet18-float-cpu-quick" in (tmp_path / "docs" / "environment.md").read_text()


def test_census_change_uses_the_studys_threshold():
    def row(variant, counts):
        record = {
            "id": variant,
            "experiment": {
                "model": "m",
                "variant": {"name": variant, "label": variant},
                "target": {"name": "cpu", "device": "d"},
            },
            "ir": {"dtype_census": {"counts": counts}, "instruction_census": {"families": {}}},
        }
        return report_rows.Row(record, "box")

    (group,) = code.census(
        [
            row("float", {"float32": 100, "int8": 10}),
            row("int8-a8", {"float32": 15, "int8": 30}),
            row("int8-a32", {"float32": 50, "int8": 40}),
        ]
    )
    changes = {c["label"]: c for c in group["changes"]}
    assert changes["int8-a8"]["float32_pct"] == -85.0 and changes["int8-a8"]["int_pct"] == 200.0
    assert changes["int8-a8"]["study_claim_holds"] and not changes["int8-a32"]["study_claim_holds"]


def test_the_report_imports_neither_tvm_nor_torch(quick_results, tmp_path):
    root, _outcomes = quick_results
    code = (
        "import sys; from report.build import build; build(sys.argv[1], sys.argv[2]);"
        "print('HEAVY', [m for m in ('tvm', 'torch') if m in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(root), str(tmp_path / "docs")],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert "HEAVY []" in done.stdout


def test_the_sweep_page_shows_each_precisions_stages_bytes_and_kernel_check(site_docs, quick_results):
    _root, outcomes = quick_results
    record = outcomes["w1a1"].record
    text = (site_docs / "sweep.md").read_text()
    bitserial = record["quantization"]["bitserial_layers"]
    assert f"| {bitserial} / " in text
    pairs = record["quantization"]["auto_bitserial_pairs"]
    assert f"ran bit-serially the convs of at most\n{pairs} plane pairs" in text
    # this machine's rule: bit-serial W1A1 convs, each checked against NumPy; none where int8 runs on AMX
    check = "ok" if pairs else "–"
    stages = f"| W1A1 (1-bit weights, 1-bit conv inputs) | ok | ok | {check} | ok | skipped: random weights"
    assert stages in text
    if pairs:
        checked = record["kernel_check"]["distinct_convs_checked"]
        assert bitserial > 0 and checked > 0 and f"| {checked} of {checked} |" in text
    else:
        assert bitserial == 0 and "kernel_check" not in record and "(none: its int8 convs run on AMX tiles)" in text
    assert "Every precision passed every stage it ran" in text
    assert 'id="sweep-resnet18-quick-profile-cpu"' in text  # the sweep's own box plot


def test_a_sweep_table_of_several_commits_runs_says_which_row_came_from_which(quick_results, tmp_path):
    import copy

    _root, outcomes = quick_results
    root = tmp_path / "results"
    for name, outcome in outcomes.items():
        record = copy.deepcopy(outcome.record)
        if name == "w1a1":
            record["environment"]["git"] = {"commit": "0ld0ld0ld", "dirty": False}
        write_result(root / "m" / f"{name}.json", record)
    build(root, tmp_path / "docs")
    text = (tmp_path / "docs" / "sweep.md").read_text()
    assert "These rows come from runs of different commits:" in text
    assert "0ld0ld0 (W1A1 (1-bit weights, 1-bit conv inputs))" in text


def test_sweep_rows_stay_off_the_studys_latency_and_accuracy_tables(quick_results):
    _root, outcomes = quick_results
    rows = report_rows.rows([(o.record, "box") for o in outcomes.values()])
    (study,) = benchmarks.latency(rows)
    (sweep,) = benchmarks.latency(rows, sweep=True)
    assert {r["variant"] for r in study["rows"]} == {"float", "int8-a8"}
    assert {r["variant"] for r in sweep["rows"]} == {"float", "w1a1"}


def test_the_subbyte_kernel_comparison_is_shown_with_its_goals(quick_results, tmp_path):
    from qbuild import subbyte

    _root, outcomes = quick_results
    env = outcomes["float"].record["environment"]
    timed = [
        subbyte.Timed((64, 56, 64, 3, 1), name, lambda: 0.0, [ms])
        for name, ms in (
            ("int8", 2.0),
            ("W1A1 bit-serial", 0.8),
            ("W1A1 bytes", 1.5),
            ("W2A2 bit-serial", 3.0),
            ("W2A2 bytes", 2.5),
        )
    ]
    root = tmp_path / "results"
    subbyte.save(root, env["machine_id"], subbyte.record(timed, 1, 1, env))
    build(root, tmp_path / "docs")
    text = (tmp_path / "docs" / "sweep.md").read_text()
    assert "| 64 x 56 -> 64, 3/1 | W1A1 bit-serial | 0.800 ms | 0.40x |" in text
    assert "**W1A1 at most 0.5x the int8 conv**: met on 1 of 1 shapes\n  (worst 0.40x, by W1A1 bit-serial)" in text
    assert "**W2A2 at most 1.0x the int8 conv**: met on 0 of 1 shapes\n  (worst 1.25x, by W2A2 bytes)" in text
    assert "(W2A2 bytes on 1)" in text


def _on_gpu(
    record: dict, median_ms: float | None, variant: dict | None = None, failed_stage: str | None = None
) -> dict:
    """``record`` as if run on a GPU machine: CUDA target, another variant, or a failed stage."""
    changed = _with_latency(record, median_ms if median_ms is not None else 1.0)
    changed["experiment"]["target"].update(name="cuda", device="NVIDIA H200 (sm_90)")
    if variant is not None:
        changed["experiment"]["variant"] = {"qconfig": None, "options": None, **variant}
        changed["experiment"]["kernels"] = None
    if failed_stage is not None:
        changed["latency"] = None
        changed["stages"][failed_stage] = {
            "status": "error",
            "seconds": 1.0,
            "error": {"type": "InternalError", "message": "Check failed: wmma"},
        }
        changed["experiment"]["kernels"] = "untuned"
    changed["id"] = f"{record['id']}-{len(str(variant))}-{failed_stage}"
    return changed


def test_gpu_results_get_their_goals_failures_and_precision_matched_peers(quick_results, tmp_path):
    _root, outcomes = quick_results
    float_record, int8_record = outcomes["float"].record, outcomes["int8-a8"].record
    root = tmp_path / "results" / "some-gpu-machine"
    write_result(root / "f.json", _on_gpu(float_record, 4.0))
    write_result(root / "q.json", _on_gpu(int8_record, 3.0))
    write_result(root / "qu.json", _on_gpu(int8_record, None, failed_stage="compile"))
    write_result(root / "fu.json", _with_kernels(_on_gpu(float_record, 5.0), 5.0))
    write_result(
        root / "t.json",
        _on_gpu(float_record, 2.0, {"name": "torch-fp32", "label": "PyTorch eager fp32 (peer)", "engine": "torch"}),
    )
    compiled_peer = _on_gpu(
        float_record,
        0.5,
        {
            "name": "torch-compile-fp16-graphs",
            "engine": "torch",
            "label": "torch.compile fp16 with CUDA graphs (peer)",
            "options": {"dtype": "float16"},
        },
    )
    compiled_peer["environment"]["git"] = {"commit": "0123456789abcdef", "dirty": False}  # an earlier run
    write_result(root / "c.json", compiled_peer)
    build(tmp_path / "results", tmp_path / "docs")
    text = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert "unquantized / PyTorch eager fp32 (peer) = **2.00** (goal: at most 1.0; not met; one run of the plan" in text
    assert "quantized (int8) / torch.compile fp16 with CUDA graphs (peer) = **6.00**" in text
    assert "quantized (int8): not timed, stage compile failed: `Check failed: wmma`" in text
    assert "| quantized (int8) | compile failed | 3.00 ms | – |" in text
    assert "qbuild has no fp16 build to set beside it" in text
    assert "Against the peer torch.compile" not in text
    assert "These rows come from runs of different commits" in text and "0123456 (torch.compile" in text
    assert "measured by different commits' runs" in text  # the int8 goal's two medians


def test_the_time_results_took_is_summed_over_their_stages_largest_first(site_docs):
    records = [
        {"stages": {"compile": {"seconds": 30.0}, "bench": {"seconds": 120.0}}},
        {"stages": {"compile": {"seconds": 60.0}, "accuracy": {"status": "skipped", "seconds": 0.0}}},
        {},
    ]
    summed = environment.stage_minutes(records)
    assert summed["minutes"] == 3.5
    assert summed["by_stage"] == [("bench", 2.0), ("compile", 1.5), ("accuracy", 0.0)]
    assert "| time these results took |" in (site_docs / "environment.md").read_text()


def test_a_box_plot_keeps_two_machines_of_one_target_apart_behind_a_machine_selector():
    from report.charts import latency_boxplot, quantiles

    boxes = [
        {
            "build": "unquantized",
            "engine": "qbuild",
            "series": series,
            "kernels": "builtin",
            "quantiles": quantiles(samples),
        }
        for series, samples in (("h100-host (NVIDIA H100)", [4.0, 4.1]), ("h200-host (NVIDIA H200)", [1.0]))
    ]
    spec = latency_boxplot(boxes, "m")
    medians = {value["series"]: value["median"] for value in spec["data"]["values"]}
    assert medians == {"h100-host (NVIDIA H100)": 4.05, "h200-host (NVIDIA H200)": 1.0}
    (selector,) = spec["params"]
    assert selector["bind"]["options"] == list(medians) and selector["value"] == "h100-host (NVIDIA H100)"
    assert spec["transform"] == [{"filter": "(datum.series === machine)"}]


def test_the_gpu_goals_from_separate_runs_point_to_the_side_by_side_judgement():
    def row(variant, ms):
        return {"variant": variant, "label": variant, "median_ms": ms, "commit": "c", "date": "2026-11-27T18:55"}

    groups = [
        {
            "model": "m",
            "target": "cuda",
            "machine": machine,
            "device": "GPU",
            "rows": [
                row("float", 1.1),
                row("torch-fp32", 5.6),
                row("int8-a8", 0.78),
                row("torch-compile-fp16-graphs", 0.77),
            ],
        }
        for machine in ("judged", "unjudged")
    ]
    judged = [
        {
            "numerator": "int8-a8",
            "denominator": "torch-compile-fp16-graphs",
            "goal_at_most": 1.0,
            "ratio": 0.98,
            "met": True,
        }
    ]
    documents = [
        {"model": "m", "target": "cuda", "machine": "judged", "targets": judged},
        {"model": "m", "target": "cpu", "machine": "unjudged", "targets": []},
    ]
    by_machine = {g["machine"]: g for g in benchmarks.gpu_goals(groups, documents)}
    plan_int8 = by_machine["judged"]["goals"][1]
    assert (plan_int8["peer"], plan_int8["met"]) == ("torch-compile-fp16-graphs", False)  # 0.78 / 0.77
    assert by_machine["judged"]["side_by_side"] == judged
    assert by_machine["unjudged"]["side_by_side"] is None  # its only comparison is a CPU one


def test_the_cpu_gpu_gap_is_given_per_pair_of_named_machines():
    def group(target, machine, **medians):
        return {
            "model": "m",
            "target": target,
            "machine": machine,
            "device": machine.upper(),
            "rows": [{"variant": v.replace("_", "-"), "median_ms": ms} for v, ms in medians.items()],
        }

    groups = [
        group("cpu", "slow-cpu", float=40.0, int8_a8=10.0),
        group("cpu", "fast-cpu", float=4.0, int8_a8=10.0),
        group("cuda", "gpu", float=1.0, int8_a8=2.0, int8_a16=2.1, int8_a32=2.0),
    ]
    (finding,) = benchmarks.gpu_cpu_findings(groups)
    assert (finding["machine"], finding["gpu_flat"]) == ("gpu", True)
    by_cpu = {c["machine"]: c for c in finding["cpus"]}
    assert by_cpu["slow-cpu"]["gaps"] == {"float": 40.0, "int8-a8": 5.0}
    assert by_cpu["slow-cpu"]["quantized_gap_smaller"] is True
    assert by_cpu["fast-cpu"]["quantized_gap_smaller"] is False
    assert finding["activation_commits"] == ["?"]  # one commit (unrecorded here): a spread of dtypes alone
    only_float = benchmarks.gpu_cpu_findings([group("cpu", "c", float=4.0), group("cuda", "g", float=1.0)])
    assert only_float[0]["cpus"][0]["quantized_gap_smaller"] is None


def _with_layer_errors(record: dict, sqnr: list, weight_sqnr: dict[int, float]) -> dict:
    changed = copy.deepcopy(record)
    layers = changed["quantization"]["layers"]
    for position, db in weight_sqnr.items():
        layers[position]["weight_sqnr_db"] = db
    changed["layer_errors"] = {
        "images": 8,
        "layers": [
            {
                "index": layer["index"],
                "op": layer["op"],
                "name": layer["name"],
                "status": layer["status"],
                "sqnr_db": db,
                "input_clipped": 0.25 if position == 3 else 0.0005,
            }
            for position, (layer, db) in enumerate(zip(layers, sqnr, strict=True))
        ],
    }
    return changed


def test_the_layer_where_a_builds_error_first_grows_large_is_named_from_the_data(quick_results, tmp_path):
    _root, outcomes = quick_results
    int8_record, w1a1_record = outcomes["int8-a8"].record, outcomes["w1a1"].record
    count = len(int8_record["quantization"]["layers"])
    machine = int8_record["environment"]["machine_id"]
    noisy = [None, 30.0, 25.0, 4.0] + [3.0] * (count - 4)  # falls below 10 dB at layer 3, its weights keep 30
    clean = [None] + [20.0 - i * 0.1 for i in range(count - 1)]
    write_result(tmp_path / "results" / machine / "a.json", _with_layer_errors(int8_record, noisy, {3: 30.0}))
    write_result(tmp_path / "results" / machine / "b.json", _with_layer_errors(w1a1_record, clean, {}))
    build(tmp_path / "results", tmp_path / "docs")
    page = (tmp_path / "docs" / "accuracy.md").read_text()
    section = page.split("## Where the accuracy goes, layer by layer")[1]
    kind = describe(int8_record["quantization"]["layers"][3])
    assert (
        f"- **quantized (int8)**: logits at 3.0 dB. The output first falls below 10 dB at layer 3 ({kind}): "
        "4.0 dB, while its weights alone keep 30.0 dB: the error there arrives with its input"
    ) in section
    assert "25.0% of its input values (the float model's) lie beyond the range of its input codes" in section
    assert section.count("lie beyond the range") == 1, "a build that clips under 0.1% says nothing of it"
    lowest = clean[-1]
    assert (f"No layer's output falls below 10 dB (lowest: {lowest:.1f} dB at layer {count - 1})") in section
    assert 'id="layers-resnet18-quick-profile-' in section and "-study-spec" in section and "-sweep-spec" in section


def _with_accuracy(record: dict, top1: float) -> dict:
    """``record`` with a top-1 (and the rest of a labelled accuracy measurement) of ``top1``."""
    changed = copy.deepcopy(record)
    labelled = {"top1": top1, "top5": min(1.0, 2 * top1), "agreement_with_float": top1, "n": 500, "dataset": "d"}
    changed["accuracy"] = {"top1": top1, "top5": labelled["top5"], "cat": None, "labelled": labelled}
    return changed


def test_a_side_by_side_build_shows_its_plan_accuracy_and_flags_a_median_far_from_it_alone(quick_results, tmp_path):
    from qbuild import compare

    _root, outcomes = quick_results
    root = tmp_path / "results"
    record = _with_accuracy(_with_latency(outcomes["int8-a8"].record, 4.0), 0.064)  # 4.0: alone, in the plan
    machine = record["environment"]["machine_id"]
    write_result(root / machine / "q.json", record)
    int8 = {
        "name": "int8-a8",
        "label": "quantized (int8)",
        "engine": "tvm",
        "precision": "int8",
        "median_ms": 2.0,
        "samples": 6,
        "best_peer": "ort-int8-qoperator",
        "ratio_to_best_peer": 0.5,
    }
    peer = {
        "name": "ort-int8-qoperator",
        "label": "ONNX Runtime int8 QOperator (peer)",
        "engine": "onnxruntime",
        "precision": "int8",
        "median_ms": 4.0,
        "samples": 6,
        "best_peer": "ort-int8-qoperator",
        "ratio_to_best_peer": 1.0,
    }
    experiment = record["experiment"]
    compare.save(
        root,
        machine,
        {
            "schema": compare.SCHEMA,
            "model": experiment["model"],
            "rounds": 2,
            "executions": 3,
            "environment": record["environment"],
            "errors": {},
            "builds": [int8, peer],
            "targets": [],
            "experiments": [experiment],
        },
    )
    build(root, tmp_path / "docs")
    text = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert (
        "| quantized (int8) | tvm | int8 | 2.00 ms | 0.50x (ort-int8-qoperator) | 4.00 ms (**-50%**) | 6.4% |" in text
    )
    assert "| ONNX Runtime int8 QOperator (peer) | onnxruntime | int8 | 4.00 ms | – | – | – |" in text, (
        "not in the plan"
    )


def _latency_row(variant: str, ms: float, top1: float | None, peer: bool = False, precision: str = "int8") -> dict:
    return {
        "variant": variant,
        "label": variant,
        "median_ms": ms,
        "top1": top1,
        "peer": peer,
        "quantized": precision == "int8",
        "precision": precision,
        "commit": "c",
        "date": "d",
    }


def test_a_peer_is_set_against_the_fastest_build_of_comparable_accuracy_only():
    group = {
        "model": "m",
        "target": "cpu",
        "machine": "box",
        "rows": [
            _latency_row("float", 10.0, 0.846, precision="fp32"),
            _latency_row("int8-a8", 3.0, 0.064),
            _latency_row("int8-a8-calibrated", 4.0, 0.848),
            _latency_row("ort-int8-qdq", 3.5, 0.844, peer=True),
        ],
    }
    (finding,) = benchmarks.latency_findings([group])
    (against,) = finding["peers"]
    assert (against["ours_label"], against["ours_ratio"]) == ("int8-a8-calibrated", 4.0 / 3.5)
    assert against["unlike"] == [{"label": "int8-a8", "top1": 0.064}]
    without_accuracy = {**group, "rows": [{**r, "top1": None} for r in group["rows"]]}
    (finding,) = benchmarks.latency_findings([without_accuracy])
    assert finding["peers"][0]["ours_label"] == "int8-a8"  # random weights: accuracy cannot tell them apart


def _result_row(
    variant: str, ms: float, top1: float | None = None, kernels: str | None = "builtin", engine: str = "tvm"
) -> report_rows.Row:
    record = {
        "id": variant,
        "experiment": {
            "model": "m",
            "kernels": kernels,
            "profile": "default",
            "variant": {"name": variant, "label": variant, "engine": engine},
            "target": {"name": "cpu", "device": "d"},
            "weights": {"kind": "pretrained"},
        },
        "latency": {"summary": {"median_ms": ms}},
        "accuracy": {"top1": top1} if top1 is not None else None,
    }
    return report_rows.Row(record, "box")


def test_the_overview_names_the_bit_widths_that_are_faster_than_int8_and_keep_accuracy():
    sweep = [
        {
            "model": "m",
            "target": "cpu",
            "machine": "box",
            "int8_ms": 4.0,
            "rows": [
                {"label": "W4A8", "median_ms": 3.0, "vs_int8": 0.75, "top1": 0.845, "delta_points": -0.5},
                {"label": "W2A2", "median_ms": 2.0, "vs_int8": 0.5, "top1": 0.10, "delta_points": -75.0},
                {"label": "W8A8", "median_ms": 5.0, "vs_int8": 1.25, "top1": 0.85, "delta_points": 0.0},
            ],
        }
    ]
    (answer,) = overview.bit_widths(sweep)
    assert [f["label"] for f in answer["faster"]] == ["W4A8", "W2A2"]
    assert answer["worth_it"] == ["W4A8"]
    assert overview.bit_widths([{**sweep[0], "int8_ms": None}]) == []  # nothing to be faster than


def _sweep_result(
    variant: str,
    ms: float | None,
    top1: float | None,
    mean_bits: float | None = None,
    weights: str = "pretrained",
    target: str = "cpu",
) -> report_rows.Row:
    """A timed (``ms``) and evaluated (``top1``) result of ``variant``; sweep precisions (``w*``,
    ``mixed-*``) record their place in the sweep and, under a bit budget, their ``mean_bits``."""
    in_sweep = variant.startswith(("w", "mixed-"))
    record = {
        "id": variant,
        "experiment": {
            "model": "m",
            "kernels": "builtin",
            "profile": "default",
            "variant": {"name": variant, "label": variant.upper(), "engine": "tvm", "in_sweep": in_sweep},
            "target": {"name": target, "device": "d"},
            "weights": {"kind": weights, "source": "", "reason": None},
        },
        "environment": {"cpu": {"flags": ["avx512_vnni", "avx512_vpopcntdq"]}},
        "latency": {"summary": {"median_ms": ms}} if ms is not None else None,
        "accuracy": {"top1": top1} if top1 is not None else None,
        "quantization": {"mixed_precision": {"mean_bits": mean_bits}} if mean_bits is not None else None,
    }
    return report_rows.Row(record, "box")


def _goals(results: list[report_rows.Row]) -> dict[tuple[str, str], dict]:
    """The sweep page's judgement of each goal of the one group in ``results``: {(name, measure): goal}."""
    (group,) = sweep.sweep(results)
    return {(goal["name"], goal["measure"]): goal for goal in group["goals"]}


def test_each_sweep_row_is_timed_against_the_int8_a8_build_of_its_model_and_machine():
    float_, int8, w4a4 = (
        _sweep_result("float", 10.0, 0.8),
        _sweep_result("int8-a8", 4.0, 0.8),
        _sweep_result("w4a4", 3.0, 0.7),
    )
    (group,) = sweep.sweep([float_, int8, w4a4])
    assert group["int8_ms"] == 4.0 and group["rows"][0]["vs_int8"] == 0.75
    (without_int8,) = sweep.sweep([float_, w4a4])
    assert without_int8["int8_ms"] is None and without_int8["rows"][0]["vs_int8"] is None


def test_the_sweep_page_judges_each_accuracy_goal_against_float_on_the_best_candidate():
    goals = _goals(
        [
            _sweep_result("float", 10.0, 0.80),
            _sweep_result("w4a8", 5.0, 0.795),  # 0.5 points below float: within 1
            _sweep_result("w4a4", 4.0, 0.75),  # 5 points below: not within 3
            _sweep_result("mixed-b3", 3.0, 0.60, mean_bits=2.9),  # 20 points below
            _sweep_result("mixed-b3x", 3.0, 0.72, mean_bits=3.0),  # 8 points below: the best of those of 3 bits
            _sweep_result("mixed-b4", 3.0, 0.79, mean_bits=3.9),  # more than 3 bits: no candidate
        ]
    )
    w4a8, w4a4, low_bits = goals["W4A8", "drop_points"], goals["W4A4", "drop_points"], goals["W2A4", "drop_points"]
    assert (w4a8["status"], round(w4a8["value"], 6), w4a8["row"]["variant"]) == ("met", 0.5, "w4a8")
    assert (w4a4["status"], round(w4a4["value"], 6)) == ("not met", 5.0)
    assert (low_bits["status"], low_bits["row"]["variant"], round(low_bits["value"], 6)) == ("met", "mixed-b3x", 8.0)


def test_a_goal_without_its_precisions_result_or_numbers_is_not_measured():
    goals = _goals(
        [
            _sweep_result("float", 10.0, 0.80),
            _sweep_result("w4a8", None, None),  # neither timed nor evaluated
            _sweep_result("mixed-b4", 3.0, 0.79, mean_bits=3.9),
        ]
    )
    for key in (("W4A8", "drop_points"), ("W4A4", "drop_points"), ("W2A4", "drop_points"), ("W2A2", "vs_int8")):
        assert (goals[key]["status"], goals[key]["row"]) == ("not measured", None), key


def test_the_speed_goals_need_a_median_under_int8_a8s_on_the_cpu():
    results = [_sweep_result("int8-a8", 4.0, None), _sweep_result("w4a4", 4.4, None), _sweep_result("w2a2", 3.6, None)]
    goals = _goals(results)
    assert (goals["W4A4", "vs_int8"]["status"], round(goals["W4A4", "vs_int8"]["value"], 6)) == ("not met", 1.1)
    assert (goals["W2A2", "vs_int8"]["status"], round(goals["W2A2", "vs_int8"]["value"], 6)) == ("met", 0.9)
    on_gpu = _goals([_sweep_result(r.variant, r.median_ms, None, target="cuda") for r in results])
    assert on_gpu["W2A2", "vs_int8"]["status"] == "not judged"


def test_random_weights_leave_the_accuracy_goals_unjudged_and_the_speed_goals_judged():
    goals = _goals(
        [
            _sweep_result("float", 10.0, 0.001, weights="random"),
            _sweep_result("int8-a8", 4.0, 0.001, weights="random"),
            _sweep_result("w4a8", 3.0, 0.001, weights="random"),
            _sweep_result("w2a2", 3.0, 0.001, weights="random"),
        ]
    )
    w4a8 = goals["W4A8", "drop_points"]
    assert (w4a8["status"], w4a8["reason"]) == ("not judged", "random weights: accuracy goals not judged")
    assert goals["W2A2", "vs_int8"]["status"] == "met"


def test_the_pareto_front_holds_the_builds_no_other_beats_in_both_latency_and_top1():
    points = [
        {"build": "fast", "median_ms": 1.0, "top1": 0.5},
        {"build": "accurate", "median_ms": 3.0, "top1": 0.8},
        {"build": "between", "median_ms": 2.0, "top1": 0.7},
        {"build": "dominated", "median_ms": 2.5, "top1": 0.6},
        {"build": "as fast, less accurate", "median_ms": 1.0, "top1": 0.4},
        {"build": "fast twin", "median_ms": 1.0, "top1": 0.5},
    ]
    front = {p["build"] for p in sweep.pareto_front(points) if p["front"]}
    assert front == {"fast", "fast twin", "between", "accurate"}


def test_the_pareto_chart_shows_the_sweep_int8_builds_and_int8_peers_with_accuracy():
    peer = _sweep_result("ort-int8-qdq", 2.0, 0.79)
    peer.record["experiment"]["variant"].update(engine="onnxruntime", precision="int8", quantized=True)
    fp32_peer = _sweep_result("ort-fp32", 6.0, 0.8)
    fp32_peer.record["experiment"]["variant"].update(engine="onnxruntime", precision="fp32")
    results = [
        _sweep_result("float", 10.0, 0.80),
        _sweep_result("int8-a8", 4.0, 0.1),
        _sweep_result("int8-a16", 4.0, 0.1),
        _sweep_result("w4a8", 3.0, 0.78),
        _sweep_result("w2a2", 2.0, None),  # no top-1: no point
        peer,
        fp32_peer,
    ]
    (group,) = sweep.sweep(results)
    shown = {p["short"]: p["front"] for p in group["pareto"]}
    assert shown == {"float": True, "int8-a8": False, "w4a8": False, "ort-int8-qdq": True}


def test_the_sweep_page_says_which_goals_random_weights_leave_unjudged(site_docs):
    text = (site_docs / "sweep.md").read_text()
    assert "**W4A8 top-1 at most 1 point below float**: not judged (random weights: accuracy goals not judged)." in text
    assert "**W4A4 median under 1.0x int8-a8's**: not measured." in text  # the quick plan sweeps W1A1 only
    assert "| vs int8-a8 |" in text


def test_the_overview_states_int8_speedups_under_both_kernel_sets():
    rows = [
        _result_row("float", 10.0),
        _result_row("int8-a8", 4.0),
        _result_row("int8-a8-calibrated", 5.0),
        _result_row("float", 100.0, kernels="untuned"),
        _result_row("int8-a8", 250.0, kernels="untuned"),
        _result_row("ort-int8-qdq", 3.0, kernels=None, engine="onnxruntime"),
    ]
    (answer,) = overview.speedups(rows)
    assert [q["speedup"] for q in answer["builtin"]["int8"]] == [2.5, 2.0]
    assert answer["untuned"]["int8"][0]["speedup"] == 0.4


def _as_variant(record: dict, name: str, median_ms: float, top1: float) -> dict:
    """``record`` as the plan's variant ``name`` (qbuild's builtin kernels, or none for a peer),
    timed at ``median_ms`` with a top-1 of ``top1``."""
    from qbuild.plan import VARIANTS

    variant = VARIANTS[name]
    changed = _with_accuracy(_with_latency(record, median_ms), top1)
    changed["experiment"]["variant"] = variant.to_json()
    changed["experiment"]["kernels"] = "builtin" if variant.engine == "tvm" else None
    changed["id"] = f"{record['experiment']['model']}-{name}-quick"
    return changed


def _imported_section(
    quick_results, tmp_path, planned: dict[str, tuple[float, float]], compared: dict[str, float]
) -> str:
    """The benchmarks page's "Models other tools quantized" built from results files of the plan's
    variants ({name: (median ms, top-1)}) and a side-by-side run of ``compared`` ({name: median ms})."""
    from qbuild import compare
    from qbuild.plan import VARIANTS

    _root, outcomes = quick_results
    record = outcomes["int8-a8"].record
    machine = record["environment"]["machine_id"]
    root = tmp_path / "results"
    for name, (median_ms, top1) in planned.items():
        write_result(root / machine / f"{name}.json", _as_variant(record, name, median_ms, top1))
    builds = [
        {
            "name": name,
            "label": VARIANTS[name].label,
            "engine": VARIANTS[name].engine,
            "precision": "int8",
            "median_ms": median_ms,
            "samples": 6,
            "best_peer": None,
            "ratio_to_best_peer": None,
        }
        for name, median_ms in compared.items()
    ]
    document = {
        "schema": compare.SCHEMA,
        "model": record["experiment"]["model"],
        "rounds": 2,
        "executions": 3,
        "environment": record["environment"],
        "errors": {},
        "builds": builds,
        "goals": [Goal(*goal).to_json() for goal in compare.GOALS["cpu"]],
        "targets": [],
        "experiments": [_as_variant(record, name, 1.0, 0.5)["experiment"] for name in compared],
    }
    if compared:
        compare.save(root, machine, document)
    build(root, tmp_path / "docs")
    page = (tmp_path / "docs" / "benchmarks.md").read_text()
    return page.split("## Models other tools quantized")[1].split("## Side by side")[0]


def test_an_imported_models_row_shows_qbuild_and_its_own_runtime_side_by_side(quick_results, tmp_path):
    from qbuild.plan import VARIANTS

    section = _imported_section(
        quick_results,
        tmp_path,
        planned={"import-ort-qdq": (9.0, 0.70), "ort-int8-qdq": (6.0, 0.71)},
        compared={"import-ort-qdq": 4.0, "ort-int8-qdq": 5.0},
    )
    runtime = VARIANTS["ort-int8-qdq"].label
    assert "**resnet18 (quick profile)**, cpu (" in section
    assert (
        f"| ONNX Runtime `quantize_static` | 4.00 ms | 70.0% | {runtime} | 5.00 ms | 71.0% | 0.80x | side by side |"
    ) in section, "medians from the run that timed both; top-1 from each build's results"
    verdict = "runs it **at least as fast as** its runtime: 0.80x the runtime's time (goal at most 1.00x), timed side"
    assert verdict in section
    assert "9.00 ms" not in section and "6.00 ms" not in section, "the separate runs' medians are not mixed in"


def test_an_imported_model_timed_in_separate_runs_says_they_were_not_measured_together(quick_results, tmp_path):
    section = _imported_section(
        quick_results,
        tmp_path,
        planned={"import-ort-qdq": (9.0, 0.70), "ort-int8-qdq": (6.0, 0.71)},
        compared={"import-ort-qdq": 4.0},  # a side-by-side run without the runtime
    )
    assert "| 9.00 ms | 70.0% |" in section and "| 6.00 ms | 71.0% | 1.50x | timed separately |" in section
    assert "qbuild's build took 1.50x the runtime's time, timed separately, not together" in section
    assert "qbuild's median from its results file, the runtime's from its results file" in section
    assert "so it is not judged" in section and "**slower than**" not in section, "separate runs give no verdict"


def test_a_pair_without_its_runtimes_result_says_not_measured(quick_results, tmp_path):
    section = _imported_section(quick_results, tmp_path, planned={"import-nncf-qdq": (5.0, 0.69)}, compared={})
    assert "| NNCF `nncf.quantize` | 5.00 ms | 69.0% | not measured | not measured | not measured | – | – |" in section
    assert "at least as fast as its runtime is **not measured**: its runtime has no result." in section
    assert "x the runtime's time" not in section, "no ratio without the runtime's median"
