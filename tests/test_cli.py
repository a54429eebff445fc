"""The command line: bad input ends in one line that names the problem and the fix."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from qbuild.cli import main
from qbuild.targets import gpu_visible


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("qbuild: error: ") and "; fix: " in lines[0]
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["run", "--model", "resnet51"], ["unknown model 'resnet51'", "resnet50"]),
        (["run", "--target", "tpu"], ["unknown target 'tpu'", "cpu"]),
        (["run", "--variant", "int3"], ["unknown variant 'int3'", "float"]),
        (["run", "--weights", "imagenet"], ["unknown weights choice", "random"]),
        (["run", "--iterations", "0"], ["iterations must be >= 1"]),
        (
            ["plan", "--models", "vit_b_16", "--profile", "quick"],
            ["vit_b_16 takes inputs of at least 224", "--profile default"],
        ),
        (["layers", "--variant", "float"], ["variant float is not quantized: it has no layer errors", "int8-a8"]),
    ],
)
def test_bad_input_is_one_line_naming_the_problem_and_the_fix(capsys, argv, needles):
    code, _out, err = run_cli(capsys, *argv)
    assert code == 2
    assert_one_line_error(err, *needles)


@pytest.mark.skipif(gpu_visible(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_says_so_and_offers_the_cpu(capsys):
    code, _out, err = run_cli(capsys, "run", "--target", "cuda")
    assert code == 2
    assert_one_line_error(err, "no CUDA GPU is visible", "--target cpu")


def test_an_unwritable_results_directory_stops_the_run_before_it_starts(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _out, err = run_cli(
        capsys, "run", "--model", "resnet18", "--profile", "quick", "--results", str(blocker / "results")
    )
    assert code == 2
    assert_one_line_error(err, "not writable", "--results")


def labelled_folder(root):
    """A one-image labelled set (labels.csv), enough for the plan to accept it."""
    from PIL import Image

    root.mkdir()
    Image.new("RGB", (8, 8)).save(root / "a.png")
    (root / "labels.csv").write_text("filename,class_index\na.png,1\n")
    return root


def test_plan_lists_the_default_plan_without_running_it(capsys, tmp_path):
    code, out, _err = run_cli(capsys, "plan", "--dataset", str(labelled_folder(tmp_path / "images")))
    assert code == 0
    assert "resnet50-float-cpu:" in out and "15x30" in out
    assert "efficientnet_lite0-int8-a32-calibrated-cpu:" in out


def test_models_lists_every_name_that_model_takes(capsys):
    code, out, _err = run_cli(capsys, "models")
    listed = {line.split()[0]: line for line in out.splitlines()}
    assert code == 0 and {"efficientnet_lite0", "resnet50", "mobilenet_v3_large", "vit_b_16"} <= set(listed)
    assert "input 299" in listed["inception_v3"] and "the study's model" in listed["resnet50"]


def test_calibrated_variants_without_a_dataset_say_how_to_give_one(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("QBUILD_DATASET", str(tmp_path / "no-such-folder"))
    code, _out, err = run_cli(capsys, "plan")
    assert code == 2
    assert_one_line_error(err, "dataset", "does not exist")
    monkeypatch.setattr("qbuild.datasets.default_path", lambda: None)
    code, _out, err = run_cli(capsys, "plan", "--variants", "int8-a8-calibrated")
    assert code == 2
    assert_one_line_error(err, "no labelled dataset was found", "--dataset DIR")
    code, _out, err = run_cli(capsys, "layers", "--variant", "int8-a8")  # measured on labelled images
    assert code == 2
    assert_one_line_error(err, "layer errors are measured on labelled images", "--dataset DIR")
    code, out, _err = run_cli(capsys, "plan", "--variants", "float", "int8-a8")
    assert code == 0 and "resnet50-int8-a8-cpu:" in out


def test_summary_of_an_empty_results_root_says_how_to_make_results(capsys, tmp_path):
    code, out, _err = run_cli(capsys, "summary", "--results", str(tmp_path))
    assert code == 0 and "qbuild experiments" in out


def test_summary_reports_a_corrupt_file_in_one_line_and_still_lists_the_good_ones(capsys, quick_run, tmp_path):
    root, outcome = quick_run
    machine_dir = tmp_path / outcome.path.parent.name
    machine_dir.mkdir()
    (machine_dir / outcome.path.name).write_text(outcome.path.read_text())
    (machine_dir / "broken.json").write_text('{"schema": ')
    code, out, err = run_cli(capsys, "summary", "--results", str(tmp_path), "--json")
    assert code == 1
    rows = json.loads(out)["results"]
    assert [r["id"] for r in rows] == ["resnet18-float-cpu-quick"]
    assert len(err.strip().splitlines()) == 1 and "broken.json: corrupt JSON" in err


def test_summary_imports_neither_tvm_nor_torch(quick_run):
    root, _outcome = quick_run
    code = (
        "import sys; from qbuild.cli import main; rc = main(['summary', '--results', sys.argv[1]]);"
        "heavy = [m for m in ('tvm', 'torch') if m in sys.modules]; print('HEAVY', heavy); sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, check=True)
    assert "HEAVY []" in done.stdout
    assert "resnet18-float-cpu-quick" in done.stdout and "ok; skipped: accuracy" in done.stdout
