"""Labelled datasets (never copied, split without overlap) and the accuracy measures."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from qbuild import accuracy, datasets
from qbuild.errors import QbuildError


def make_csv_set(root, n=6):
    root.mkdir(parents=True, exist_ok=True)
    lines = ["filename,wnid,class_index,torchvision_name"]
    for i in range(n):
        Image.new("RGB", (40, 30), color=(i * 40, 0, 0)).save(root / f"img{i}.JPEG")
        lines.append(f"img{i}.JPEG,n0,{i % 3},name")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def test_a_labels_csv_folder_loads_with_class_indices(tmp_path):
    labelled = datasets.load(make_csv_set(tmp_path / "set"))
    assert [label for _path, label in labelled.items] == [0, 1, 2, 0, 1, 2]
    assert labelled.id.startswith("set@")


def test_class_index_subfolders_load_too(tmp_path):
    for label in (3, 7):
        (tmp_path / str(label)).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / str(label) / "a.png")
    assert [label for _p, label in datasets.load(tmp_path).items] == [3, 7]


def test_calibration_and_evaluation_images_never_overlap(tmp_path):
    labelled = datasets.load(make_csv_set(tmp_path / "set"))
    calibration, evaluation = labelled.split(2)
    assert len(calibration) == 2 and len(evaluation) == 4
    assert not {p for p, _ in calibration} & {p for p, _ in evaluation}
    assert labelled.split(2) == (calibration, evaluation)  # seeded: the same split every run


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda root: root / "nowhere", "does not exist"),
        (lambda root: root, "holds no labelled images"),
        (lambda root: (root / "labels.csv").write_text("file,label\n") and root, "lacks the column"),
        (
            lambda root: (root / "labels.csv").write_text("filename,class_index\ngone.jpg,1\n") and root,
            "names gone.jpg",
        ),
    ],
)
def test_a_missing_or_malformed_dataset_is_one_line_with_the_fix(tmp_path, setup, message):
    with pytest.raises(QbuildError) as err:
        datasets.load(setup(tmp_path))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_default_dataset_comes_from_the_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path))
    assert datasets.default_path() == tmp_path


def one_hot(index: int) -> np.ndarray:
    logits = np.zeros((1, 1000), np.float32)
    logits[0, index] = 5.0
    logits[0, (index + 1) % 1000] = 4.0
    return logits


def test_top1_top5_and_agreement_with_the_float_model():
    samples = [(np.full((3, 2, 2), label, np.float32), label) for label in (1, 2, 3, 4)]

    # the candidate predicts the label for the first two, label-1 (label second-best) for the others
    def candidate(batch):
        return one_hot(int(batch.flat[0]) if batch.flat[0] < 3 else int(batch.flat[0]) - 1)

    def reference(batch):
        return one_hot(int(batch.flat[0]))

    scored = accuracy.evaluation(reference, samples, "demo")
    assert scored.reference_top1 == (1, 2, 3, 4)
    result = accuracy.labelled(candidate, scored)
    assert result == {
        "dataset": "demo",
        "n": 4,
        "top1": 0.5,
        "top5": 1.0,
        "agreement_with_float": 0.5,
        "float_top1": 1.0,
    }


def test_the_cat_check_names_the_classes_and_knows_a_cat():
    result = accuracy.cat(lambda batch: one_hot(281), np.zeros((3, 2, 2), np.float32))
    assert result["is_cat"] and result["top5"][0]["name"] == "tabby"
    assert sum(entry["probability"] for entry in result["top5"]) <= 1.0
    assert not accuracy.cat(lambda batch: one_hot(1), np.zeros((3, 2, 2), np.float32))["is_cat"]


def test_the_cat_image_ships_with_a_dependency():
    image = datasets.cat_image()
    assert image is not None and image.size == (451, 300)


def test_the_builds_of_a_model_share_one_reading_and_scoring_of_the_evaluation_images(tmp_path, monkeypatch):
    from qbuild import stages
    from qbuild.models import load_model
    from qbuild.plan import build_plan
    from qbuild.progress import Progress
    from qbuild.session import ModelSession

    dataset = make_csv_set(tmp_path / "set", n=12)
    float_build, int8_build = build_plan(
        ["efficientnet_lite0"],
        ["float", "int8-a8"],
        ["cpu"],
        "quick",
        "auto",
        dataset=str(dataset),
        kernels=["builtin"],
    )
    loaded = load_model("efficientnet_lite0", "auto", float_build.profile.image_size)
    scorings = []
    real_evaluation = accuracy.evaluation
    monkeypatch.setattr(accuracy, "evaluation", lambda *args: scorings.append(args) or real_evaluation(*args))
    session = ModelSession()
    reference = accuracy.torch_logits(loaded.module)
    results = [
        stages.accuracy(build, reference, loaded, Progress(quiet=True), session) for build in (float_build, int8_build)
    ]
    assert len(scorings) == 1, "read and scored once for both builds"
    for result in results:  # the reference scored against itself
        assert result["labelled"]["n"] == float_build.profile.accuracy_images
        assert result["labelled"]["agreement_with_float"] == 1.0
