"""Schedule rules for the kernels around the matmuls: elementwise/injective chains and row reductions
(RMSNorm, softmax, sums over the last axis) — parallel over rows, vectorised along the row."""

from __future__ import annotations

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


class _SafeRule(ScheduleRule):
    """A rule whose failure on an unexpected kernel leaves that kernel to the next rule."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        try:
            return self._apply(func)
        except Exception:  # pylint: disable=broad-except
            return None

    def _apply(self, func: tirx.PrimFunc):
        raise NotImplementedError


def _has_let(func: tirx.PrimFunc) -> bool:
    """Whether the kernel binds values with `T.Let` expressions (e.g. the scaled RoPE frequencies)."""
    return "T.Let(" in func.script()


def _schedule_rows(sch: s_tir.Schedule, block) -> None:
    """Parallel over the fused outer loops, the innermost loop kept whole and vectorised in lanes.

    Used for kernels with let-bound values: fusing the innermost loop into the others turns its index into
    div/mod expressions that the common-subexpression pass hoists above the let binding they depend on
    ("variable used before definition" when lowering)."""
    loops = sch.get_loops(block)
    if len(loops) > 1:
        outer = sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0]
        sch.parallel(outer)
    inner = loops[-1]
    extent = sch.get(inner).extent
    if isinstance(extent, tirx.IntImm) and int(extent) % LANES == 0:
        _, lane = sch.split(inner, [None, LANES])
        sch.vectorize(lane)


class Elementwise(_SafeRule):
    """Injective kernels: fuse the chain into one loop nest, parallel chunks, vector lanes inside."""

    def _apply(self, func: tirx.PrimFunc):
        sch = s_tir.Schedule(func)
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        if not blocks or not all(_is_spatial(sch, b) for b in blocks):
            return None
        schedule = _schedule_rows if _has_let(func) else schedule_elementwise
        for block in _inline_spatial(sch):
            schedule(sch, block)
        return sch


class RowReduction(_SafeRule):
    """Reductions over the innermost axis followed by elementwise work on the same rows (RMSNorm,
    softmax): all blocks run under one parallel loop over rows; elementwise parts are vectorised."""

    def _apply(self, func: tirx.PrimFunc):  # pylint: disable=too-many-locals
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
