"""What the generated code is made of: a data-type census of the LLVM IR, an instruction
census of the assembly, and the source files themselves kept as artifacts.

Data-type census rule (the study's table, made precise)
    Every occurrence of an LLVM scalar type token in the IR text counts once for the type it
    names: ``float`` -> float32, ``double`` -> float64, ``half`` -> float16, ``bfloat`` ->
    bfloat16, ``iN`` -> intN (``i1`` is the boolean type). A vector type counts as one
    occurrence of its element type (``<16 x float>`` is one float32), since it is written once.
    Comments (after ``;``), metadata lines (starting with ``!``), ``attributes`` lines and
    string literals are skipped: they hold no values of those types.

Instruction census rule
    Each instruction line of the AT&T assembly counts once for its mnemonic; families group
    mnemonics by the arithmetic they prove (fp FMA, VNNI dot products, popcount, ...).
    Register width counts every ``%xmm``/``%ymm``/``%zmm`` operand.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from collections import Counter
from pathlib import Path

LLVM_TYPE_NAMES = {"float": "float32", "double": "float64", "half": "float16", "bfloat": "bfloat16"}
_LLVM_TYPE_TOKEN = re.compile(r"(?<![\w.%@$])(i\d+|half|bfloat|float|double)(?![\w.])")
_STRING_LITERAL = re.compile(r'c?"(?:[^"\\]|\\.)*"')

# Family -> mnemonic pattern (AT&T mnemonics, matched from the start of the mnemonic).
INSTRUCTION_FAMILIES = {
    "fp FMA (vfmadd/vfmsub)": r"vf(n?madd|n?msub|maddsub|msubadd)\d*(ps|ss|pd|sd|ph)",
    "fp mul/add (vmulps/vaddps)": r"v(mul|add|sub)(ps|ss|pd|sd)",
    "int8 dot VNNI (vpdpbusd)": r"vpdpbusds?",
    "int16 dot VNNI (vpdpwssd)": r"vpdpwssds?",
    "u8*s8 pairs (vpmaddubsw)": r"vpmaddubsw",
    "s16*s16 pairs (vpmaddwd)": r"vpmaddwd",
    "int multiply (vpmull)": r"vpmull[wdq]",
    "int add (vpadd)": r"vpadd[bwdq]",
    "popcount (vpopcnt/popcnt)": r"v?popcnt[bwdqlw]?",
    "conversions (cvt)": r"v?cvt",
}
_FAMILY_PATTERNS = {name: re.compile(rf"(?:{pattern})") for name, pattern in INSTRUCTION_FAMILIES.items()}
_ASM_INSTRUCTION = re.compile(r"^\s+([a-z][a-z0-9]*)\b")
_VECTOR_REGISTER = re.compile(r"%([xyz]mm)\d+")


def _llvm_dtype(token: str) -> str:
    if token in LLVM_TYPE_NAMES:
        return LLVM_TYPE_NAMES[token]
    return "int" + token[1:]


def dtype_census(llvm_ir: str) -> dict[str, int]:
    """Occurrences of each scalar data type in LLVM IR text, by the rule in this module's doc."""
    counts: Counter[str] = Counter()
    for line in llvm_ir.splitlines():
        stripped = line.lstrip()
        if not stripped or stripped.startswith(("!", ";", "attributes ", "source_filename", "target ")):
            continue
        code = _STRING_LITERAL.sub("", line).split(";", 1)[0]
        counts.update(_llvm_dtype(token) for token in _LLVM_TYPE_TOKEN.findall(code))
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def instruction_census(assembly: str, top: int = 25) -> dict:
    """Instruction counts of AT&T assembly: total, by family, the most common mnemonics, vector widths."""
    mnemonics: Counter[str] = Counter()
    registers: Counter[str] = Counter()
    for line in assembly.splitlines():
        match = _ASM_INSTRUCTION.match(line)
        if match is None:
            continue
        mnemonics[match.group(1)] += 1
        registers.update(_VECTOR_REGISTER.findall(line))
    families = {
        name: sum(n for m, n in mnemonics.items() if pattern.match(m))
        for name, pattern in _FAMILY_PATTERNS.items()
    }
    return {
        "total": sum(mnemonics.values()),
        "families": families,
        "top_mnemonics": dict(mnemonics.most_common(top)),
        "vector_registers": {width: registers.get(width, 0) for width in ("xmm", "ymm", "zmm")},
    }


def save_artifacts(files: dict[str, str], directory: Path, stem: str, relative_to: Path) -> dict[str, dict]:
    """Write each text gzipped as ``<stem>.<suffix>.gz``; return suffix -> {path, bytes, sha256},
    the path relative to ``relative_to`` (the results file's folder) and bytes uncompressed."""
    directory.mkdir(parents=True, exist_ok=True)
    saved: dict[str, dict] = {}
    for suffix, text in files.items():
        data = text.encode()
        path = directory / f"{stem}.{suffix}.gz"
        tmp = path.with_suffix(".tmp")
        # mtime=0: the same source gives byte-identical files, so git sees no change on re-runs.
        with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
            gz.write(data)
        tmp.replace(path)
        saved[suffix] = {
            "path": path.relative_to(relative_to).as_posix(),
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    return saved


def analyse_sources(sources: dict[str, str]) -> dict:
    """Census of whatever generated code exists: LLVM IR (dtype) and assembly (instructions)."""
    result: dict = {}
    if "ll" in sources:
        result["dtype_census"] = {"source": "ll", "counts": dtype_census(sources["ll"])}
    if "s" in sources:
        result["instruction_census"] = {"source": "s", **instruction_census(sources["s"])}
    return result
