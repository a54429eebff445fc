"""The benchmarks page's models other tools quantized: each QDQ model another tool made, compiled
by qbuild and run by its own runtime (the ONNX Runtime peer that runs the same model), their
latency and top-1 side by side."""

from __future__ import annotations

from typing import Iterable

from qbuild.schema.documents import goals as recorded_goals
from report.rows import Row, group_by

# A producer (``qbuild.schema.variants``' ``qdq_producer``) as the page names it.
PRODUCERS = {"onnxruntime": "ONNX Runtime `quantize_static`", "nncf": "NNCF `nncf.quantize`"}
SIDE_BY_SIDE = "side by side"  # both medians from one side-by-side run
SEPARATELY = "timed separately"  # each median from a run of its own


def _compared(document: dict) -> list[Row]:
    """The builds a side-by-side ``document`` compared, as rows that say which build each is (its
    medians are in the document's builds, not in these rows)."""
    return [
        Row({"id": e["id"], "experiment": e}, document["machine"])
        for e in document.get("experiments", [])
        if "variant" in e
    ]


def _side(name: str | None, result: Row | None, document: dict | None) -> dict:
    """One build of a pair: its label, its median in its own results file and in the side-by-side
    ``document``, its top-1 (None: not measured) and why it was not timed, where it failed."""
    build = next((b for b in (document or {}).get("builds", []) if b["name"] == name), None)
    failure = result.failure if result is not None else None
    error = (document or {}).get("errors", {}).get(name)
    return {
        "name": name,
        "label": result.label if result is not None else (build or {}).get("label"),
        "result_ms": result.median_ms if result is not None else None,
        "side_by_side_ms": (build or {}).get("median_ms"),
        "top1": result.top1 if result is not None else None,
        "failure": f"stage {failure['stage']} failed" if failure else error,
    }


def _timing(side: dict, together: bool) -> tuple[float | None, str | None]:
    """A side's median and where it comes from: the side-by-side run that timed both builds
    (``together``), else its own results file (None: not measured)."""
    if together:
        return side["side_by_side_ms"], "the side-by-side run"
    if side["result_ms"] is not None:
        return side["result_ms"], "its results file"
    return None, None


def _pair(producer: str, ours: dict, runtime: dict, document: dict | None) -> dict:
    """qbuild's build of ``producer``'s model against its runtime, each side with its ``median_ms``
    and its ``source`` (``_timing``); the ratio qbuild / runtime where both are timed, and the
    verdict only where the side-by-side run timed both and recorded the pair's goal (its
    ``goal_at_most``): a ratio of separate runs is shown, never judged."""
    together = ours["side_by_side_ms"] is not None and runtime["side_by_side_ms"] is not None
    for side in (ours, runtime):
        side["median_ms"], side["source"] = _timing(side, together)
    timed = ours["median_ms"] is not None and runtime["median_ms"] is not None
    ratio = ours["median_ms"] / runtime["median_ms"] if timed else None
    target = (document or {}).get("target", "cpu")
    pair = (ours["name"], runtime["name"])
    goal = next((g for g in recorded_goals(document, target) if (g.numerator, g.denominator) == pair), None)
    at_most = goal.at_most if goal is not None and together else None
    return {
        "producer": producer,
        "producer_name": PRODUCERS.get(producer, producer),
        "ours": ours,
        "runtime": runtime,
        "measured": SIDE_BY_SIDE if together else (SEPARATELY if timed else None),
        "together": together,
        "date": (document or {}).get("environment", {}).get("date", "")[:10] if together else None,
        "ratio": ratio,
        "goal_at_most": at_most,
        "at_least_as_fast": None if ratio is None or at_most is None else ratio <= at_most,
    }


def _imported(r: Row) -> bool:
    """A build of a model another tool quantized: qbuild's (builtin kernels) or its runtime's."""
    return r.description.qdq_producer is not None and r.subject == r.setting


def _where(r: Row) -> tuple[str, str, str]:
    return (r.machine, r.setting, r.target)


def _names(group: list[Row], producer: str) -> tuple[str | None, str | None]:
    """The variants in ``group`` of qbuild's build of ``producer``'s model and of its runtime (None: not run)."""

    def first(peer: bool) -> str | None:
        return next((r.variant for r in group if r.is_peer == peer and r.description.qdq_producer == producer), None)

    return first(False), first(True)


def imported_models(all_rows: list[Row], side_by_side: Iterable[dict]) -> list[dict]:
    """Per machine, model and target where qbuild compiled a QDQ model another tool quantized
    (with qbuild's builtin kernels): one pair per producer, qbuild's build and the peer that runs
    the same model, each with its median and top-1 (None: not measured; a runtime never run is a
    side without a name). Medians come from a side-by-side document only where it timed both
    builds (``measured``: ``SIDE_BY_SIDE``); otherwise each from a run of its own (``SEPARATELY``)."""
    planned = [r for r in all_rows if _imported(r)]
    compared = [(doc, r) for doc in side_by_side for r in _compared(doc) if _imported(r)]
    document_of = {_where(r): doc for doc, r in compared}
    result_of: dict[tuple[tuple[str, str, str], str | None], Row] = {(_where(r), r.variant): r for r in planned}
    out = []
    for where, group in group_by(planned + [r for _doc, r in compared], _where):
        document = document_of.get(where)
        pairs = []
        for producer in dict.fromkeys(r.description.qdq_producer for r in group if not r.is_peer):
            ours, runtime = (_side(name, result_of.get((where, name)), document) for name in _names(group, producer))
            pairs.append(_pair(producer, ours, runtime, document))
        if pairs:
            machine, model, target = where
            device = next((r.device for r in group if r.device), None)
            out.append({"machine": machine, "model": model, "target": target, "device": device, "pairs": pairs})
    return out
