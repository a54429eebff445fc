"""The environment page: each machine's environment and the time its results took."""

from __future__ import annotations


def environments(results) -> list[dict]:
    """Per machine: the environment of its newest result, and the minutes its results' stages took
    (summed over the files: what making them all again would take, process start-up aside)."""
    out = []
    for machine in results.machines():
        files = [f for f in results.files if f.machine_id == machine]
        newest = max(files, key=lambda f: f.record["environment"].get("date", ""))
        env = newest.record["environment"]
        out.append(
            {
                "machine": machine,
                "env": env,
                "experiments": len(files),
                "jobs": max(f.record.get("jobs", 1) for f in files),
                "dates": sorted({f.record["environment"].get("date", "")[:10] for f in files}),
                **stage_minutes(f.record for f in files),
            }
        )
    return out


def stage_minutes(records) -> dict:
    """{"minutes": all stages of ``records`` summed, "by_stage": [(stage, minutes)], largest first}."""
    seconds: dict[str, float] = {}
    for record in records:
        for name, stage in (record.get("stages") or {}).items():
            seconds[name] = seconds.get(name, 0.0) + (stage.get("seconds") or 0.0)
    by_stage = sorted(((name, total / 60) for name, total in seconds.items()), key=lambda item: -item[1])
    return {"minutes": sum(seconds.values()) / 60, "by_stage": by_stage}
