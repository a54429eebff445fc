"""The results schema: every file records what a reader judges it by, and files written before
a field was recorded are read as their schema version implies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qbuild import compare, subbyte
from qbuild.errors import QbuildError
from qbuild.layer_errors import FLOOR_DB
from qbuild.plan import VARIANTS
from qbuild.schema import documents, layers, quantization, tuning
from qbuild.schema.kinds import SIDE_BY_SIDE, TUNING
from qbuild.schema.variants import SCHEMA_1_VARIANTS, describe_variant

COMMITTED = Path(__file__).resolve().parent.parent / "results"
RECORDED = ("precision", "quantized", "in_sweep", "order")


def test_the_plan_records_for_each_variant_the_description_schema_1_gives_files_without_it():
    for name in SCHEMA_1_VARIANTS:
        recorded = VARIANTS[name].to_json()
        old = {key: value for key, value in recorded.items() if key not in RECORDED}
        assert describe_variant(recorded) == describe_variant(old), name


def test_a_variant_added_since_schema_1_records_its_whole_description():
    added = [variant for name, variant in VARIANTS.items() if name not in SCHEMA_1_VARIANTS]
    for variant in added:
        recorded = variant.to_json()
        assert all(recorded.get(key) is not None for key in ("precision", "quantized", "in_sweep")), recorded


def test_a_variant_the_plan_does_not_list_is_described_by_its_own_record_and_sorts_last():
    recorded = {"name": "mine", "label": "my own", "qconfig": {}, "engine": "tvm", "options": None}
    description = describe_variant(recorded)
    assert description.quantized and description.order is None and not description.in_sweep
    assert description.rank() > describe_variant(VARIANTS["w1a1"].to_json()).rank()
    assert describe_variant({**recorded, "precision": "int4", "in_sweep": True}).precision == "int4"


def test_an_imported_model_and_the_peer_that_runs_it_name_the_same_producer():
    def producer(name: str, **changed) -> str | None:
        return describe_variant({**VARIANTS[name].to_json(), **changed}).qdq_producer

    assert producer("import-ort-qdq") == producer("ort-int8-qdq") == "onnxruntime"  # it records no producer
    assert producer("import-nncf-qdq") == producer("ort-int8-qdq", options={"quant_format": "QDQ", "producer": "nncf"})
    assert producer("import-nncf-qdq") == "nncf"
    for other in ("float", "int8-a8", "ort-int8-qoperator", "openvino-int8"):
        assert producer(other) is None, other


def test_quantized_results_are_read_with_the_defaults_they_record_else_schema_1s():
    recorded = {"defaults": {"nbit_input": 4}}
    assert quantization.qconfig_defaults(recorded) == {"nbit_input": 4}
    defaults_run = sorted(COMMITTED.glob("*/*-int8-a32-cpu.json"))  # relay's defaults: an empty qconfig
    assert defaults_run, "the committed results include a run of relay's defaults"
    for path in defaults_run:
        assert json.loads(path.read_text())["quantization"]["config"] == quantization.qconfig_defaults(None)


def test_layer_errors_are_judged_by_the_floor_they_record_else_schema_1s():
    assert layers.floor_db({"floor_db": 6.0}) == 6.0
    assert layers.floor_db({"layers": []}) == layers.SCHEMA_1_FLOOR_DB == FLOOR_DB


def test_a_compare_document_records_its_goals_and_an_older_one_reads_schema_1s():
    document = {"goals": [documents.Goal(*goal).to_json() for goal in compare.GOALS["cuda"]]}
    assert [(g.numerator, g.denominator, g.at_most) for g in documents.goals(document, "cuda")] == list(
        compare.GOALS["cuda"]
    )
    assert documents.goals({"schema": SIDE_BY_SIDE}, "cpu") == documents.goals(None, "cpu")
    assert [(g.numerator, g.denominator, g.at_most) for g in documents.goals(None, "cpu")] == list(
        documents.SCHEMA_1_GOALS["cpu"]
    )


def test_a_subbyte_kernels_document_records_the_auto_rule_and_an_older_one_reads_schema_2s():
    timed = [subbyte.Timed((64, 56, 64, 3, 1), name, lambda: 0.0, [1.0]) for name in ("int8", "W1A1 bit-serial")]
    document = subbyte.record(timed, 1, 1, {})
    assert documents.max_auto_pairs(document) == document["max_auto_pairs"]
    assert documents.max_auto_pairs({"schema": document["schema"]}) == documents.SCHEMA_2_MAX_AUTO_PAIRS


def test_side_by_side_files_of_an_unknown_kind_or_not_json_are_one_line_each(tmp_path):
    folder = tmp_path / "box" / "side-by-side"
    folder.mkdir(parents=True)
    (folder / "a.json").write_text("{")
    (folder / "b.json").write_text(json.dumps({"schema": "other/1"}))
    (folder / "c.json").write_text(json.dumps({"schema": SIDE_BY_SIDE, "model": "m"}))
    found = list(documents.iter_documents(tmp_path))
    errors = [str(item) for item in found if isinstance(item, documents.DocumentError)]
    assert len(errors) == 2 and all("\n" not in e and str(folder) in e for e in errors)
    assert [item for item in found if isinstance(item, dict)] == [
        {"schema": SIDE_BY_SIDE, "model": "m", "machine": "box"}
    ]


def test_a_tuning_database_reads_without_the_kernels_and_labels_its_tiles(tmp_path):
    path = tmp_path / "m.json"
    workload = {"summary": "a conv", "default_ms": 2.0, "best_ms": 1.0, "candidates": 3}
    path.write_text(
        json.dumps(
            {"schema": TUNING, "machine_id": "m", "rounds": 1, "workloads": {"k": {**workload, "tile": [4, 2, 4]}}}
        )
    )
    read = tuning.read_tuning(path)
    assert read.machine_id == "m" and tuning.tile_label(read.workloads["k"].tile) == "4x2/4"
    assert tuning.tile_label([7, 1]) == "7x1"


@pytest.mark.parametrize("tile", [[4], [1, 2, 3, 4], "4x2"])
def test_a_tuning_database_with_a_malformed_tile_is_one_error_naming_the_file_and_the_fix(tmp_path, tile):
    path = tmp_path / "m.json"
    workload = {"summary": "a conv", "default_ms": 2.0, "best_ms": 1.0, "candidates": 3, "tile": tile}
    path.write_text(json.dumps({"schema": TUNING, "machine_id": "m", "rounds": 1, "workloads": {"k": workload}}))
    with pytest.raises(QbuildError, match=f"tuning database {path} is unreadable.*fix: delete it"):
        tuning.read_tuning(path)
