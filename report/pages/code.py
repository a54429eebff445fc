"""The generated-code page: the data-type census against unquantized and the instruction census."""

from __future__ import annotations

from report.rows import Row, group_by, pct_change

INT_TYPES = ("int8", "int16", "int32")
STUDY_DTYPES = ("float32", "int32", "int16", "int8")


# What each census read (qbuild.analysis): its artifact suffix -> the words the page uses.
CENSUS_SOURCES = {
    "ll": "LLVM IR",
    "s": "x86 assembly",
    "cu": "CUDA source",
    "ptx": "PTX",
    "sass": "SASS (GPU machine code)",
}


def census(all_rows: list[Row]) -> list[dict]:
    """Per (machine, model, target): the dtype census of each variant, changes against unquantized,
    and the instruction census."""
    out = []
    for (machine, model, target), group in group_by(all_rows, lambda r: (r.machine, r.subject, r.target)):
        with_ir = [r for r in group if r.field("ir", "dtype_census", "counts")]
        if not with_ir:
            continue
        counts = {r.variant: r.record["ir"]["dtype_census"]["counts"] for r in with_ir}
        dtypes = list(STUDY_DTYPES) + sorted({d for c in counts.values() for d in c} - set(STUDY_DTYPES))
        base = counts.get("float")
        changes = []
        for r in with_ir:
            if base is None or r.variant == "float":
                continue
            c = counts[r.variant]
            float_change = pct_change(base.get("float32", 0), c.get("float32", 0))
            int_change = pct_change(sum(base.get(t, 0) for t in INT_TYPES), sum(c.get(t, 0) for t in INT_TYPES))
            changes.append(
                {
                    "label": r.label,
                    "float32_pct": float_change,
                    "int_pct": int_change,
                    "study_claim_holds": float_change is not None
                    and int_change is not None
                    and float_change <= -80
                    and int_change >= 100,
                }
            )
        families = list(
            next(iter(r.record["ir"].get("instruction_census", {}).get("families", {}) for r in with_ir), {})
        )
        instructions = with_ir[0].record["ir"].get("instruction_census", {})
        out.append(
            {
                "machine": machine,
                "model": model,
                "target": target,
                "device": with_ir[0].device,
                "dtype_source": CENSUS_SOURCES.get(with_ir[0].field("ir", "dtype_census", "source"), "generated code"),
                "instruction_source": CENSUS_SOURCES.get(instructions.get("source"), "generated code"),
                "binary": instructions.get("binary"),
                "variants": [
                    {"label": r.label, "id": r.id, "artifacts": r.record["ir"].get("artifacts", {})} for r in with_ir
                ],
                "dtype_rows": [{"dtype": d, "counts": [counts[r.variant].get(d, 0) for r in with_ir]} for d in dtypes],
                "changes": changes,
                "instruction_rows": [
                    {
                        "family": f,
                        "counts": [r.field("ir", "instruction_census", "families", f, default=0) for r in with_ir],
                    }
                    for f in families
                ],
                "vector_rows": [
                    {
                        "width": w,
                        "counts": [
                            r.field("ir", "instruction_census", "vector_registers", w, default=0) for r in with_ir
                        ],
                    }
                    for w in ("xmm", "ymm", "zmm", "neon")
                    if w != "neon" or any(r.field("ir", "instruction_census", "vector_registers", w) for r in with_ir)
                ]
                if instructions.get("source") == "s"
                else [],
                "launch_rows": _launch_rows(with_ir, target),
            }
        )
    return out


def _launch_rows(rows: list[Row], target: str) -> list[dict]:
    """Kernels launched per inference (and, on a GPU, how many a CUDA graph replays) for each
    variant; none where no results file has the launch census (results older than it)."""
    if not any(r.field("ir", "launch_census") for r in rows):
        return []
    keys = [("kernels", "kernels launched per inference")]
    if target == "cuda":
        keys.append(("in_cuda_graph", "of them replayed from one CUDA graph"))
    return [{"what": what, "counts": [r.field("ir", "launch_census", key) for r in rows]} for key, what in keys]
