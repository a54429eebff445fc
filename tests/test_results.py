"""Results files: atomic writes, validation, and one-line errors for files that cannot be used."""

from __future__ import annotations

import json

import pytest

from qbuild.errors import QbuildError
from qbuild.results import ensure_writable, write_result
from qbuild.schema.kinds import RESULTS as SCHEMA
from qbuild.schema.results import ResultsFileError, iter_results, load_result


def minimal_record(**overrides) -> dict:
    record = {
        "schema": SCHEMA,
        "id": "m-float-cpu",
        "experiment": {},
        "environment": {"machine_id": "box"},
        "stages": {"load": {"status": "ok", "seconds": 0.1}},
    }
    record.update(overrides)
    return record


def test_write_then_load_round_trips_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "box" / "m-float-cpu.json"
    write_result(path, minimal_record())
    assert load_result(path).record == minimal_record()
    assert [p.name for p in path.parent.iterdir()] == ["m-float-cpu.json"]


def test_a_failed_write_keeps_the_previous_result(tmp_path):
    path = tmp_path / "box" / "m-float-cpu.json"
    write_result(path, minimal_record())
    with pytest.raises(TypeError):
        write_result(path, minimal_record(stages={"load": {"status": "ok", "seconds": object()}}))
    assert load_result(path).record == minimal_record()
    assert len(list(path.parent.iterdir())) == 1


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "corrupt JSON"),
        (json.dumps([1, 2]), "not a qbuild results object"),
        (json.dumps(minimal_record(schema="other/9")), "schema 'other/9'"),
        (json.dumps({"schema": SCHEMA}), "missing id"),
        (json.dumps(minimal_record(stages={"load": {"status": "maybe"}})), "no valid status"),
    ],
)
def test_unusable_files_give_one_line_naming_the_file_and_the_fix(tmp_path, content, message):
    path = tmp_path / "box" / "bad.json"
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(ResultsFileError) as err:
        load_result(path)
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text
    assert "re-run" in text or "delete" in text


def test_iteration_yields_good_files_and_errors_for_bad_ones(tmp_path):
    write_result(tmp_path / "box" / "good.json", minimal_record())
    (tmp_path / "box" / "bad.json").write_text("{")
    items = list(iter_results(tmp_path))
    assert [type(i).__name__ for i in items] == ["ResultsFileError", "ResultFile"]


def test_an_unwritable_results_directory_is_reported_before_any_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(QbuildError) as err:
        ensure_writable(blocker / "results")
    assert "not writable" in str(err.value) and "--results" in err.value.fix


@pytest.mark.parametrize(
    "flags, tag",
    [
        ("avx2 avx512f avx512_vnni amx_tile amx_int8", "amx"),
        ("avx2 avx512f avx512_vnni", "avx512vnni"),
        ("avx2 avx512f", "avx512"),
        ("sse4_2 avx2", "avx2"),
    ],
)
def test_the_machine_id_names_the_widest_isa_the_kernels_use(monkeypatch, flags, tag):
    """Results and tuning databases are filed by machine id: a Xeon with AMX (whose int8 convs
    run on tiles) and one without must not share them."""
    from qbuild import environment

    monkeypatch.setattr(environment, "cpuinfo", lambda: {"model name": "Intel(R) Xeon(R) Processor", "flags": flags})
    monkeypatch.setattr(environment, "gpu_name", lambda: None)
    monkeypatch.setattr(environment.os, "cpu_count", lambda: 2)
    assert environment.machine_id() == f"intel-r-xeon-r-processor-{tag}-2c"
