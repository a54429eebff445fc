"""The data-type census of LLVM IR and the instruction census of assembly, on known snippets."""

from __future__ import annotations

import gzip
import hashlib

from qbuild.analysis import dtype_census, instruction_census, launch_census, save_artifacts

LLVM_IR = """\
; ModuleID = 'demo'  (i32 in a comment does not count)
source_filename = "demo"
target datalayout = "e-m:e-i64:64-f80:128"
@str = private constant [4 x i8] c"i32\\00"
define void @f(ptr %a, <16 x float> %v, i32 %n) #0 {
  %x = load i8, ptr %a, align 1 ; trailing comment with float
  %y = sext i8 %x to i32
  %z = fadd <16 x float> %v, %v
  %h = fptrunc float 1.0 to half
  %b = icmp eq i32 %y, 0
  ret void
}
attributes #0 = { "target-features"="+avx2,i64" }
!0 = !{i32 7, !"PIC Level", i32 2}
"""


def test_dtype_census_counts_each_type_token_once_and_skips_comments_strings_metadata():
    assert dtype_census(LLVM_IR) == {
        # [4 x i8] global + load i8 + sext i8
        "int8": 3,
        # @f's %n + sext..to i32 + icmp i32
        "int32": 3,
        # <16 x float> in the signature and in fadd (one vector type = one token), fptrunc's float
        "float32": 3,
        "float16": 1,
    }


ASSEMBLY = """\
f:
\t.p2align 4
\tvfmadd231ps %zmm1, %zmm2, %zmm0
\tvfmadd213ss %xmm1, %xmm2, %xmm0
\tvpdpbusd %zmm3, %zmm4, %zmm5
\tvpmaddubsw %ymm1, %ymm2, %ymm3
\tvpmaddwd %ymm1, %ymm2, %ymm3
\tvpopcntq %zmm1, %zmm2
\tvaddps %ymm1, %ymm2, %ymm3
\tvpaddd %ymm1, %ymm2, %ymm3
\tretq
# vpdpbusd in a comment is not an instruction
.Lfunc_end0:
"""


def test_instruction_census_groups_mnemonics_into_families_and_counts_vector_widths():
    census = instruction_census(ASSEMBLY)
    assert census["total"] == 9
    families = census["families"]
    assert families["fp FMA (vfmadd/vfmsub)"] == 2
    assert families["int8 dot VNNI (vpdpbusd)"] == 1
    assert families["u8*s8 pairs (vpmaddubsw)"] == 1
    assert families["s16*s16 pairs (vpmaddwd)"] == 1
    assert families["popcount (vpopcnt/popcnt)"] == 1
    assert families["fp mul/add (vmulps/vaddps)"] == 1
    assert families["int add (vpadd)"] == 1
    assert census["vector_registers"] == {"xmm": 3, "ymm": 12, "zmm": 8}
    assert census["top_mnemonics"]["vfmadd231ps"] == 1


def test_an_encoding_pseudo_prefix_is_not_the_mnemonic():
    """LLVM for a CPU with AVX-VNNI and AVX512-VNNI (Emerald Rapids) writes a 256-bit vpdpbusd in its
    VEX form, "{vex} vpdpbusd"; it is a vpdpbusd all the same."""
    census = instruction_census(
        "f:\n\t{vex}\tvpdpbusd\t%ymm7, %ymm2, %ymm8\n\t{evex} vpdpbusds %zmm1, %zmm2, %zmm3\n"
        "\t{vex3} vpaddd %ymm1, %ymm2, %ymm3\n"
    )
    assert census["total"] == 3
    assert census["families"]["int8 dot VNNI (vpdpbusd)"] == 2
    assert census["families"]["int add (vpadd)"] == 1
    assert census["top_mnemonics"] == {"vpdpbusd": 1, "vpdpbusds": 1, "vpaddd": 1}
    assert census["vector_registers"] == {"xmm": 0, "ymm": 6, "zmm": 3}


def test_artifacts_are_gzipped_reproducibly_with_their_hash(tmp_path):
    saved = save_artifacts({"ll": "define void @f()"}, tmp_path / "artifacts" / "x", "module", tmp_path)
    entry = saved["ll"]
    assert entry["path"] == "artifacts/x/module.ll.gz"
    data = gzip.decompress((tmp_path / entry["path"]).read_bytes())
    assert data == b"define void @f()" and entry["sha256"] == hashlib.sha256(data).hexdigest()
    first = (tmp_path / entry["path"]).read_bytes()
    save_artifacts({"ll": "define void @f()"}, tmp_path / "artifacts" / "x", "module", tmp_path)
    assert (tmp_path / entry["path"]).read_bytes() == first


VM_PROGRAM = """\
@main:
  call  vm.builtin.check_tensor_info in: %0, i4, c[0], c[1] dst: %void
  call  vm.builtin.cuda_graph.get_cached_alloc in: %vm, f[cuda_graph_alloc], i0 dst: %1
  call  stem          in: %0, %3       dst: %void
  call  vm.builtin.cuda_graph.run_or_capture in: %vm, f[main_cuda_graph_capture], %6, i0 dst: %7
  call  classifier    in: %8, c[9], %10 dst: %void
  ret   %10

@vm.builtin.check_tensor_info packed_func;

@cuda_graph_alloc:
  call  vm.builtin.alloc_storage in: %vm, c[10], i0, c[6], c[7] dst: %0
  call  init_kernel   in: %0 dst: %void
  ret   %0

@stem packed_func;

@main_cuda_graph_capture:
  call  vm.builtin.match_shape in: %0, %void, i4, c[12] dst: %void
  call  conv          in: c[14], %0, %1 dst: %void
  call  conv          in: c[15], %1, %2 dst: %void
  call  epilogue      in: %2, %3 dst: %void
  ret   %2

@conv packed_func;

@epilogue packed_func;

@classifier packed_func;

@init_kernel packed_func;
"""


def test_the_launch_census_counts_the_kernels_one_inference_calls_and_those_in_cuda_graphs():
    assert launch_census(VM_PROGRAM) == {"kernels": 5, "in_cuda_graph": 3, "cuda_graphs": 1}, (
        "stem + classifier + the captured conv, conv, epilogue; not the allocation's kernel, no builtins"
    )
    cpu_program = VM_PROGRAM.replace("vm.builtin.cuda_graph.run_or_capture", "vm.builtin.make_tuple")
    assert launch_census(cpu_program) == {"kernels": 2, "in_cuda_graph": 0, "cuda_graphs": 0}
