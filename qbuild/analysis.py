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
    Each instruction line of the assembly (x86 AT&T, or AArch64) counts once for its mnemonic
    (after any encoding pseudo-prefix such as ``{vex}``, which picks an encoding, not an
    instruction); families group mnemonics by the arithmetic they prove (fp FMA, VNNI and NEON
    dot products, popcount, ...). Register width counts every ``%xmm``/``%ymm``/``%zmm`` operand,
    and on AArch64 every 128-bit NEON operand (``v0.16b``, ``q0``: ``neon``).

On CUDA the same two censuses read the device code (``qbuild.cuda_code``):

- data types: every C type name in the CUDA source (outside comments, string literals and
  preprocessor lines) counts once for the type it names: ``signed char``/``char`` -> int8,
  ``unsigned char`` -> uint8, ``short`` -> int16, ``int`` -> int32, ``long long`` -> int64 (and
  their unsigned forms), ``float``, ``double``, ``half`` -> float16, ``nv_bfloat16`` ->
  bfloat16, ``intN_t``. A CUDA vector type (``char4``, ``int4``, ``float2``: four int8s,
  four int32s, two floats; not 4-bit ints) counts once for its element type.
- instructions: each PTX instruction counts once for its full opcode (``wmma.mma.sync...s8``),
  each SASS instruction (``cuobjdump -sass``) once for its opcode with modifiers
  (``IMMA.16816.S8.S8``); predicates (``@p``) are not part of the opcode. Families: tensor-core
  MMA by operand type, dp4a, fp32 FMA, integer multiply-add, popcount.

Launch census rule
    The Relax VM program (``module.vm``: the executable's text) calls kernels by name: a kernel
    is a callee the program declares as a packed function and whose name has no dot (TVM's
    builtins are ``vm.builtin.*``). One inference runs ``main`` and each function that
    ``vm.builtin.cuda_graph.run_or_capture`` captures into a CUDA graph (replayed, not
    re-launched from the host, after the first run): their kernel calls are the kernels launched
    per inference, the captured ones ``in_cuda_graph``. Functions run once (the CUDA graph's
    allocations) do not count.
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
    "int8 tile dot AMX (tdpbusd)": r"tdpb[su][su]d",
    "int16 dot VNNI (vpdpwssd)": r"vpdpwssds?",
    "u8*s8 pairs (vpmaddubsw)": r"vpmaddubsw",
    "s16*s16 pairs (vpmaddwd)": r"vpmaddwd",
    "int multiply (vpmull)": r"vpmull[wdq]",
    "int add (vpadd)": r"vpadd[bwdq]",
    "popcount (vpopcnt/popcnt)": r"v?popcnt[bwdqlw]?",
    "conversions (cvt)": r"v?cvt",
    # AArch64 (NEON, the dot-product and int8 matrix-multiply extensions)
    "int8 dot NEON (sdot/udot)": r"(us|su|s|u)dot",
    "int8 matrix multiply i8mm (smmla)": r"(us|s|u)mmla",
    "fp FMA NEON (fmla)": r"fml[as]",
    "int multiply-add NEON (mla/smlal)": r"(mla|[su]mlal2?)$",
    "popcount NEON (cnt)": r"cnt$",
}
VECTOR_WIDTHS = ("xmm", "ymm", "zmm", "neon")
_FAMILY_PATTERNS = {name: re.compile(rf"(?:{pattern})") for name, pattern in INSTRUCTION_FAMILIES.items()}
# An encoding pseudo-prefix ({vex}, {vex3}, {evex}, ...) is not the mnemonic: LLVM writes the VEX-encoded
# AVX-VNNI form of a 128/256-bit vpdpbusd as "{vex} vpdpbusd" on CPUs with both AVX-VNNI and AVX512-VNNI.
_ASM_INSTRUCTION = re.compile(r"^\s+(?:\{[a-z0-9]+\}\s+)*([a-z][a-z0-9]*)\b")
_VECTOR_REGISTER = re.compile(r"%([xyz]mm)\d+")
_NEON_REGISTER = re.compile(r"\b(?:v\d+\.(?:16b|8h|4s|2d)|q\d+)\b")


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
    """Instruction counts of x86 (AT&T) or AArch64 assembly: total, by family, the most common
    mnemonics, vector widths."""
    mnemonics: Counter[str] = Counter()
    registers: Counter[str] = Counter()
    for line in assembly.splitlines():
        match = _ASM_INSTRUCTION.match(line)
        if match is None:
            continue
        mnemonics[match.group(1)] += 1
        registers.update(_VECTOR_REGISTER.findall(line))
        registers["neon"] += len(_NEON_REGISTER.findall(line))
    families = {
        name: sum(n for m, n in mnemonics.items() if pattern.match(m)) for name, pattern in _FAMILY_PATTERNS.items()
    }
    return {
        "total": sum(mnemonics.values()),
        "families": families,
        "top_mnemonics": dict(mnemonics.most_common(top)),
        "vector_registers": {
            width: registers.get(width, 0) for width in VECTOR_WIDTHS if width != "neon" or registers["neon"]
        },
    }


# CUDA C type names -> dtype (matched longest first); vector types: _CUDA_VECTOR_ELEMENTS.
CUDA_TYPE_NAMES = {
    "unsigned long long": "uint64",
    "long long": "int64",
    "unsigned char": "uint8",
    "signed char": "int8",
    "unsigned short": "uint16",
    "unsigned int": "uint32",
    "unsigned": "uint32",
    "long": "int64",
    "char": "int8",
    "short": "int16",
    "int": "int32",
    "float": "float32",
    "double": "float64",
    "half": "float16",
    "__half": "float16",
    "nv_bfloat16": "bfloat16",
    "__nv_bfloat16": "bfloat16",
    "bool": "bool",
    "uchar": "uint8",
    "ushort": "uint16",
    "uint": "uint32",
}
_CUDA_VECTOR_ELEMENTS = {
    "char": "int8",
    "uchar": "uint8",
    "short": "int16",
    "ushort": "uint16",
    "int": "int32",
    "uint": "uint32",
    "longlong": "int64",
    "ulonglong": "uint64",
    "float": "float32",
    "double": "float64",
    "half": "float16",
}
_CUDA_SCALAR = "|".join(
    re.escape(name).replace(r"\ ", r"\s+") for name in sorted(CUDA_TYPE_NAMES, key=len, reverse=True)
)
_CUDA_TYPE_TOKEN = re.compile(
    rf"(?<![\w.])(?:(?P<fixed>u?int(?:8|16|32|64))_t|(?P<vector>{'|'.join(_CUDA_VECTOR_ELEMENTS)})(?P<lanes>[1-4])"
    rf"|(?P<scalar>{_CUDA_SCALAR}))(?![\w])"
)
_C_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)

PTX_FAMILIES = {
    "int8 tensor-core MMA (wmma/mma .s8/.u8)": r"(wmma\.mma|mma)\.sync\S*\.[su]8",
    "fp16/bf16 tensor-core MMA": r"(wmma\.mma|mma|wgmma\.mma_async)\S*\.(f16|bf16)",
    "int8 dot product (dp4a/dp2a)": r"dp[24]a",
    "fp32 FMA (fma .f32)": r"fma\S*\.f32",
    "int multiply-add (mad)": r"mad\S*\.[su]",
    "popcount (popc)": r"popc",
}
SASS_FAMILIES = {
    "int8 tensor-core MMA (IMMA)": r"IMMA",
    "fp16/bf16 tensor-core MMA (HMMA)": r"HMMA",
    "int8 dot product (IDP.4A)": r"IDP",
    "fp32 FMA (FFMA)": r"FFMA",
    "int multiply-add (IMAD)": r"IMAD",
    "popcount (POPC)": r"POPC",
}
_PTX_INSTRUCTION = re.compile(r"^\s*(?:@!?%\w+\s+)?([a-z][\w.:]*)")
_SASS_INSTRUCTION = re.compile(r"^\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)")


def cuda_dtype_census(source: str) -> dict[str, int]:
    """Occurrences of each data type in CUDA C source, by the rule in this module's doc."""
    counts: Counter[str] = Counter()
    code = _C_COMMENT.sub("", source)
    for line in code.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for match in _CUDA_TYPE_TOKEN.finditer(_STRING_LITERAL.sub("", line)):
            if match.group("fixed"):
                counts[match.group("fixed")] += 1
            elif match.group("vector"):
                counts[_CUDA_VECTOR_ELEMENTS[match.group("vector")]] += 1
            else:
                counts[CUDA_TYPE_NAMES[" ".join(match.group("scalar").split())]] += 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _opcode_census(text: str, instruction: re.Pattern, families: dict[str, str], top: int) -> dict:
    mnemonics: Counter[str] = Counter()
    for line in text.splitlines():
        match = instruction.match(line)
        if match is not None and not match.group(1).endswith(":"):  # PTX labels end with ':'
            mnemonics[match.group(1)] += 1
    return {
        "total": sum(mnemonics.values()),
        "families": {
            name: sum(n for m, n in mnemonics.items() if re.match(pattern, m)) for name, pattern in families.items()
        },
        "top_mnemonics": dict(mnemonics.most_common(top)),
    }


def ptx_census(ptx: str, top: int = 25) -> dict:
    """Instruction counts of PTX: total, by family, the most common opcodes."""
    body = "\n".join(line for line in ptx.splitlines() if not line.lstrip().startswith((".", "//", "{", "}")))
    return _opcode_census(body, _PTX_INSTRUCTION, PTX_FAMILIES, top)


def sass_census(sass: str, top: int = 25) -> dict:
    """Instruction counts of ``cuobjdump -sass`` output: total, by family, the most common opcodes."""
    return _opcode_census(sass, _SASS_INSTRUCTION, SASS_FAMILIES, top)


_VM_FUNCTION = re.compile(r"^@([\w.]+)(:| packed_func;)$")
_VM_CALL = re.compile(r"^\s+call\s+([\w.]+)\s+in:(.*)$")
_CAPTURED = re.compile(r"f\[([\w.]+)\]")
CUDA_GRAPH_RUN = "vm.builtin.cuda_graph.run_or_capture"


def launch_census(vm_text: str) -> dict[str, int]:
    """Kernels launched per inference by a Relax VM program, by the rule in this module's doc."""
    calls: dict[str, list[tuple[str, str]]] = {}
    packed: set[str] = set()
    current = None
    for line in vm_text.splitlines():
        header = _VM_FUNCTION.match(line)
        if header:
            name, kind = header.groups()
            current = None
            if kind == ":":
                current = calls.setdefault(name, [])
            else:
                packed.add(name)
        elif current is not None and (call := _VM_CALL.match(line)):
            current.append(call.groups())
    captured = [
        f for callee, args in calls.get("main", []) if callee == CUDA_GRAPH_RUN for f in _CAPTURED.findall(args)
    ]

    def kernels(function: str) -> int:
        return sum(callee in packed and "." not in callee for callee, _ in calls.get(function, []))

    in_graph = sum(kernels(f) for f in captured)
    return {"kernels": kernels("main") + in_graph, "in_cuda_graph": in_graph, "cuda_graphs": len(captured)}


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
    """Census of whatever generated code exists: data types of the LLVM IR or CUDA source;
    instructions of the x86 assembly, else of the SASS (with the PTX's kept beside it); kernel
    launches of the VM program."""
    result: dict = {}
    if "ll" in sources:
        result["dtype_census"] = {"source": "ll", "counts": dtype_census(sources["ll"])}
    if "cu" in sources:
        result["dtype_census"] = {"source": "cu", "counts": cuda_dtype_census(sources["cu"])}
    if "s" in sources:
        result["instruction_census"] = {"source": "s", **instruction_census(sources["s"])}
    if "ptx" in sources:
        result["ptx_census"] = {"source": "ptx", **ptx_census(sources["ptx"])}
    if "sass" in sources:
        result["instruction_census"] = {"source": "sass", **sass_census(sources["sass"])}
    elif "ptx" in sources:
        result["instruction_census"] = result["ptx_census"]
    if "vm" in sources:
        result["launch_census"] = launch_census(sources["vm"])
    return result
