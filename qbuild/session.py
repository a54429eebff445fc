"""What the builds of one model share (``ModelSession``): made for the first build that needs it
and reused by the next, in place of module-wide caches. A plan runs a model's builds one after
another, so a session holds one model's values at a time: a value made for another key (another
model, other weights) replaces the one held."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from qbuild.plan import Experiment
from qbuild.progress import Progress
from qbuild.quantize.memo import Memory

T = TypeVar("T")


def model_key(experiment: Experiment, loaded: Any) -> tuple:
    """Which model, with which weights: what the shared values of a model's builds depend on first."""
    return (experiment.model, repr(loaded.weights.to_json()))


class ModelSession:
    """The values a model's builds share: its trace, its scored evaluation images, its float
    layers' outputs, and the quantizer's ``memory`` (calibration statistics, rounded weights)."""

    def __init__(self) -> None:
        self.memory = Memory()
        self._held: dict[str, tuple[tuple, Any]] = {}

    def shared(self, what: str, key: tuple, make: Callable[[], T]) -> T:
        """``make()``, or what it made last time for ``what`` if ``key`` is unchanged."""
        held = self._held.get(what)
        if held is None or held[0] != key:
            self._held.pop(what, None)  # the previous model's goes before the next is made
            self._held[what] = (key, make())
        return self._held[what][1]

    def held(self) -> list[str]:
        """The names of the values held, in the order they were made."""
        return list(self._held)

    def traced(self, experiment: Experiment, loaded: Any) -> Any:
        """The model traced into Relax (``qbuild.trace``; its inference module made once too)."""
        from qbuild.trace import trace

        key = (*model_key(experiment, loaded), tuple(loaded.input_shape))
        return self.shared("traced", key, lambda: trace(loaded.module, loaded.input_shape))

    def evaluation(self, experiment: Experiment, loaded: Any, progress: Progress) -> Any:
        """The held-out images ``experiment`` is scored on, with the float reference's top-1 on
        each (``qbuild.accuracy.evaluation``)."""
        from qbuild import accuracy, datasets

        dataset = datasets.load(experiment.dataset)
        profile = experiment.profile
        key = (
            *model_key(experiment, loaded),
            dataset.id,
            profile.calibration_images,
            profile.accuracy_images,
            profile.image_size,
        )

        def score() -> Any:
            _, held_out = dataset.split(profile.calibration_images)
            held_out = held_out[: profile.accuracy_images]
            progress.say(f"reading {len(held_out)} evaluation images, scoring the float reference on them")
            return accuracy.evaluation(
                accuracy.torch_logits(loaded.module), datasets.images(held_out, loaded.preprocess), dataset.id
            )

        return self.shared("evaluation", key, score)

    def float_layers(self, experiment: Experiment, loaded: Any, reference: Any) -> Any:
        """The float module's layer outputs compiled for the host (``compile.host_tensors``): the
        same for every quantized variant of the model."""
        from qbuild.compile import host_tensors

        key = (*model_key(experiment, loaded), tuple(loaded.input_shape))
        return self.shared("float layers", key, lambda: host_tensors(reference))
