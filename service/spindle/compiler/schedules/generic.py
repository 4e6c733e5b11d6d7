"""Schedule rules for the kernels around the matmuls: elementwise/injective chains and row reductions
(RMSNorm, softmax, sums over the last axis) — parallel over rows, vectorised along the row."""

from __future__ import annotations

import tvm
import tvm.script
from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from .matmul import LANES, schedule_elementwise


def _is_spatial(sch: s_tir.Schedule, block) -> bool:
    return all(iv.iter_type == tirx.IterVar.DataPar for iv in sch.get(block).iter_vars)


def _inline_spatial(sch: s_tir.Schedule, keep_last: bool = True) -> list:
    """Inline every spatial block that can be inlined (except the last block); return what is left."""
    changed = True
    while changed:
        changed = False
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        for block in blocks[:-1] if keep_last else blocks:
            if not _is_spatial(sch, block):
                continue
            try:
                sch.compute_inline(block)
                changed = True
                break
            except Exception:  # pylint: disable=broad-except
                pass
        if not changed:
            blocks = sch.get_child_blocks(sch.get_sblock("root"))
            for block in blocks[1:]:
                if not _is_spatial(sch, block):
                    continue
                try:
                    sch.reverse_compute_inline(block)
                    changed = True
                    break
                except Exception:  # pylint: disable=broad-except
                    pass
    return sch.get_child_blocks(sch.get_sblock("root"))


# Kernels writing fewer output elements than this run on the calling thread: waking TVM's thread pool
# costs a microsecond or more (much more when the other cores are busy), more than a batch-1 decode
# step's norm takes on one core.
SERIAL_BELOW = 8192


def with_serial_branch(parallel: tirx.PrimFunc, serial: tirx.PrimFunc, min_size: int = SERIAL_BELOW):
    """One kernel running ``parallel`` when its output (last parameter) has at least ``min_size`` elements
    and ``serial`` otherwise. ``serial`` is a separately parsed copy of the same kernel (its own buffers
    and shape variables, scheduled without parallel loops); its parameters become views of
    ``parallel``'s and its shape variables are bound to ``parallel``'s. None if the two do not line up."""
    if len(parallel.params) != len(serial.params):
        return None
    binds, decls = [], []
    for p_par, p_ser in zip(parallel.params, serial.params):
        shape_par, shape_ser = list(getattr(p_par, "shape", [])), list(getattr(p_ser, "shape", []))
        if len(shape_par) != len(shape_ser):
            return None
        for d_par, d_ser in zip(shape_par, shape_ser):
            if isinstance(d_ser, tirx.Var):
                if not isinstance(d_par, tirx.Var):
                    return None
                if not any(v.same_as(d_ser) for v, _ in binds):
                    binds.append((d_ser, d_par))
            elif not isinstance(d_par, tirx.IntImm) or int(d_par) != int(d_ser):
                return None
        decls.append(tirx.DeclBuffer(p_ser, data=p_par))
    size = tirx.IntImm("int64", 1)
    for dim in parallel.params[-1].shape:
        size = size * tirx.Cast("int64", dim)
    small = tirx.SeqStmt([*(tirx.LetStmt(v, value) for v, value in binds), *decls, serial.body])
    branch = tirx.IfThenElse(size >= tirx.IntImm("int64", min_size), parallel.body, small)
    # Relax's kernel analyses expect the body to be one block.
    return parallel.with_body(s_tir.SBlockRealize([], True, s_tir.SBlock([], [], [], "root", branch)))


class _SafeRule(ScheduleRule):
    """A rule whose failure on an unexpected kernel leaves that kernel to the next rule. Kernels with a
    symbolic output size get a serial twin for small outputs (``with_serial_branch``)."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        try:
            sch = self._apply(func)
        except Exception:  # pylint: disable=broad-except
            return None
        if sch is None:
            return None
        shape = list(getattr(func.params[-1], "shape", [])) if func.params else []
        if not shape or all(isinstance(d, tirx.IntImm) for d in shape):
            return sch
        # Data movement (reshape, take: Relax's "opaque" pattern) is left as it is: Relax turns reshapes into
        # views by analysing their single loop nest.
        pattern = func.attrs.get("op_pattern") if func.attrs else None
        if pattern is None or int(pattern) > 4:
            return sch
        try:
            twin = self._apply(tvm.script.from_source(func.script()), parallel=False)
            merged = with_serial_branch(sch.mod["main"], twin.mod["main"]) if twin is not None else None
        except Exception:  # pylint: disable=broad-except
            merged = None
        return merged if merged is not None else sch

    def _apply(self, func: tirx.PrimFunc, parallel: bool = True):
        raise NotImplementedError


def _has_let(func: tirx.PrimFunc) -> bool:
    """Whether the kernel binds values with `T.Let` expressions (e.g. the scaled RoPE frequencies)."""
    return "T.Let(" in func.script()


def _schedule_flat(sch: s_tir.Schedule, block) -> None:
    """`schedule_elementwise` without the parallel loop: one fused loop, vectorised in lanes."""
    loops = sch.get_loops(block)
    if not loops:
        return
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    _, lane = sch.split(fused, [None, LANES])
    sch.vectorize(lane)


def _schedule_rows(sch: s_tir.Schedule, block, parallel: bool = True) -> None:
    """Parallel over the fused outer loops, the innermost loop kept whole and vectorised in lanes.

    Used for kernels with let-bound values: fusing the innermost loop into the others turns its index into
    div/mod expressions that the common-subexpression pass hoists above the let binding they depend on
    ("variable used before definition" when lowering)."""
    loops = sch.get_loops(block)
    if len(loops) > 1:
        outer = sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0]
        if parallel:
            sch.parallel(outer)
    inner = loops[-1]
    extent = sch.get(inner).extent
    if isinstance(extent, tirx.IntImm) and int(extent) % LANES == 0:
        _, lane = sch.split(inner, [None, LANES])
        sch.vectorize(lane)


class Elementwise(_SafeRule):
    """Injective kernels: fuse the chain into one loop nest, parallel chunks, vector lanes inside."""

    def _apply(self, func: tirx.PrimFunc, parallel: bool = True):
        sch = s_tir.Schedule(func)
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        if not blocks or not all(_is_spatial(sch, b) for b in blocks):
            return None
        for block in _inline_spatial(sch):
            if _has_let(func):
                _schedule_rows(sch, block, parallel)
            elif parallel:
                schedule_elementwise(sch, block)
            else:
                _schedule_flat(sch, block)
        return sch


class RowReduction(_SafeRule):
    """Reductions over the innermost axis followed by elementwise work on the same rows (RMSNorm,
    softmax): all blocks run under one parallel loop over rows; elementwise parts are vectorised."""

    def _apply(self, func: tirx.PrimFunc, parallel: bool = True):  # pylint: disable=too-many-locals
        sch = s_tir.Schedule(func)
        blocks = _inline_spatial(sch)
        if not blocks or not _is_spatial(sch, blocks[-1]):
            return None
        reductions = [b for b in blocks if not _is_spatial(sch, b)]
        if not reductions:
            return None
        out = blocks[-1]
        out_iters = sch.get(out).iter_vars
        for red in reductions:
            iters = sch.get(red).iter_vars
            kinds = [iv.iter_type for iv in iters]
            if kinds[-1] != tirx.IterVar.CommReduce or kinds.count(tirx.IterVar.CommReduce) != 1:
                return None
            if len(iters) != len(out_iters):
                return None
        loops = sch.get_loops(out)
        if len(loops) < 2:
            return None
        row = sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0]
        inner = loops[-1]
        if parallel:
            sch.parallel(row)
        for other in reversed(blocks[:-1]):
            sch.compute_at(other, row, preserve_unit_loops=True)
        _, lane = sch.split(inner, [None, LANES])
        sch.vectorize(lane)
        for other in blocks[:-1]:
            if _is_spatial(sch, other):
                inner_loops = sch.get_loops(other)
                if len(inner_loops) > 1:
                    _, lane = sch.split(inner_loops[-1], [None, LANES])
                    sch.vectorize(lane)
        return sch
