"""Schedule rule for matmuls `C[..., n] = sum_k X[..., k] * W[n, k]` on the CPU (GEMV and GEMM).

One kernel serves decode (a few rows) and prefill (many rows): the rows are padded to a multiple of the
row tile, the reduction is split into SIMD-width lanes with `rfactor`, and each thread owns a slab of
output columns whose weight rows it streams once per row tile, keeping `rows x cols x lanes`
accumulators in registers. Weights in a quantized format arrive through a dequantize stage that is
inlined into the reduction, so the kernel reads only the quantized bytes.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

LANES = 8  # float32 lanes of a 256-bit vector
MAX_COL_TILE = 8  # weight rows streamed side by side (more interleaved streams defeat the prefetchers)
GROUP = 32  # weights per quantization block


def _const(expr) -> int | None:
    return int(expr) if isinstance(expr, (int, tirx.IntImm)) else None


def _is_var(expr, var) -> bool:
    return isinstance(expr, tirx.Var) and expr.same_as(var)


class Matmul(ScheduleRule):
    """Register-tiled, lane-split matmul rule for weights stored `[out, in]`."""

    def __init__(self, row_tile: int = 4, col_tile: int = 4, max_const_rows: int = 4, accumulators: int = 16,
                 specialize_single_row: bool = True, lanes: int = LANES, col_block: int = 4):
        self.lanes = lanes
        self.col_block = col_block
        self.row_tile = row_tile
        self.col_tile = col_tile
        self.max_const_rows = max_const_rows
        self.accumulators = accumulators
        self.specialize_single_row = specialize_single_row

    # -- analysis -------------------------------------------------------------------------------------
    @staticmethod
    def _match(sch: s_tir.Schedule, block) -> dict | None:
        """Checks the einsum shape C[s..., n] += f(X[s..., k]) * g(W[n, k]); returns its parts."""
        stmt = sch.get(block)
        iters = list(stmt.iter_vars)
        kinds = [iv.iter_type for iv in iters]
        if kinds.count(tirx.IterVar.CommReduce) != 1 or kinds[-1] != tirx.IterVar.CommReduce:
            return None
        if any(kind not in (tirx.IterVar.DataPar, tirx.IterVar.CommReduce) for kind in kinds):
            return None
        if len(iters) < 3 or len(stmt.writes) != 1 or len(stmt.reads) < 2:
            return None
        k = iters[-1].var
        n = iters[-2].var
        spatial = [iv.var for iv in iters[:-1]]
        out = stmt.writes[0]
        if len(out.region) != len(spatial) or not all(
            _const(r.extent) == 1 and _is_var(r.min, v) for r, v in zip(out.region, spatial)
        ):
            return None
        lhs = rhs = None
        for region in stmt.reads:
            if region.source.same_as(out.source):
                continue
            idx = [r.min for r in region.region]
            if any(_const(r.extent) != 1 for r in region.region):
                return None
            if len(idx) == 2 and _is_var(idx[0], n) and _is_var(idx[1], k):
                rhs = region.source
            elif len(idx) == len(spatial) and _is_var(idx[-1], k) and all(
                _is_var(i, v) or _const(i) == 0 for i, v in zip(idx[:-1], spatial[:-1])
            ):
                lhs = region.source
            else:
                return None
        if lhs is None or rhs is None:
            return None
        dom = [iv.dom.extent for iv in iters]
        return {"lhs": lhs, "rhs": rhs, "dom": dom}

    # -- scheduling -----------------------------------------------------------------------------------
    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        try:
            return self._apply(func, target)
        except Exception:  # pylint: disable=broad-except
            return None  # a kernel this rule cannot transform is left to the next rule

    def _apply(self, func: tirx.PrimFunc, target: Target):  # pylint: disable=too-many-locals
        sch = s_tir.Schedule(func)
        root = sch.get_sblock("root")
        blocks = sch.get_child_blocks(root)
        reductions = [b for b in blocks if any(iv.iter_type == tirx.IterVar.CommReduce for iv in sch.get(b).iter_vars)]
        if len(reductions) != 1:
            return None
        block = reductions[0]
        info = self._match(sch, block)
        if info is None:
            return None
        dom = info["dom"]
        n_ext, k_ext = _const(dom[-2]), _const(dom[-1])
        if n_ext is None or k_ext is None or k_ext % LANES:
            return None
        lead = dom[:-2]
        symbolic = [i for i, e in enumerate(lead) if _const(e) is None]
        if len(symbolic) > 1:
            return None
        rows_const = 1
        for e in lead:
            rows_const *= _const(e) or 1
        if symbolic and self.specialize_single_row:
            rows = lead[symbolic[0]]
            if isinstance(rows, tirx.Var):
                return self._with_single_row_branch(func, target, rows)
        if symbolic:
            row_tile = self.row_tile
            padding = [1] * len(dom)
            padding[symbolic[0]] = row_tile
            sch.pad_einsum(block, padding)
        elif rows_const <= self.max_const_rows:
            row_tile = rows_const
        else:
            row_tile = next(t for t in (self.row_tile, 2, 1) if rows_const % t == 0)

        # Enough independent accumulators (rows x cols) to hide the FMA latency.
        want = min(max(self.col_tile, self.accumulators // row_tile), MAX_COL_TILE)
        col_tile = next(t for t in (want, 4, 2, 1) if n_ext % t == 0)

        # Inline weight-side producers (dequantize, casts) into the reduction.
        for producer in sch.get_producers(block):
            name = sch.get(producer).name_hint
            if sch.get(producer).reads and not name.endswith("_pad"):
                try:
                    sch.compute_inline(producer)
                except Exception:  # pylint: disable=broad-except
                    pass

        side = [sch.get(b).name_hint for b in sch.get_child_blocks(root) if not sch.get(b).same_as(sch.get(block))]
        loops = sch.get_loops(block)
        m = sch.fuse(*loops[:-2]) if len(loops) > 3 else loops[0]
        n, k = loops[-2], loops[-1]
        lanes = self.lanes if k_ext % self.lanes == 0 else LANES
        ko, kl = sch.split(k, [None, lanes])
        rf = sch.rfactor(kl, factor_axis=len(dom) - 1)
        m, n, ko, kl = sch.get_loops(rf)
        mo, mi = sch.split(m, [None, row_tile])
        no, ni = sch.split(n, [None, col_tile])
        block_tiles = self.col_block if (n_ext // col_tile) % self.col_block == 0 else 1
        if block_tiles > 1:
            # A thread owns `block_tiles` column tiles and runs them all for one row tile before moving on,
            # so the row tile's activations stay in L1 while the block's weights come from L2.
            npar, nin = sch.split(no, [None, block_tiles])
        else:
            npar, nin = no, None
        outer = [npar, mo] + ([nin] if nin is not None else [])
        if k_ext % GROUP == 0 and GROUP % lanes == 0:
            # Unrolling a quantization group lets LLVM load and convert its scale once per group.
            kb, kq = sch.split(ko, [None, GROUP // lanes])
            sch.reorder(*outer, kb, kq, mi, ni, kl)
            sch.unroll(kq)
            ko = kb
        else:
            sch.reorder(*outer, ko, mi, ni, kl)
        sch.reverse_compute_at(block, outer[-1])
        no = npar
        sch.parallel(no)
        sch.vectorize(kl)
        sch.unroll(mi)
        sch.unroll(ni)
        sch.decompose_reduction(rf, ko)
        self._schedule_side_blocks(sch, block, side)
        return sch

    def _with_single_row_branch(self, func: tirx.PrimFunc, target: Target, rows: tirx.Var):
        """`if rows == 1` runs a kernel scheduled for exactly one row (batch-1 decode: no padding, no
        wasted FMAs, dequantized weights used once); otherwise the padded multi-row kernel runs."""
        general = Matmul(self.row_tile, self.col_tile, self.max_const_rows, self.accumulators, False,
                         lanes=self.lanes, col_block=self.col_block)
        big = general._apply(func, target)  # pylint: disable=protected-access
        if big is None:
            return None
        # The one-row variant views the same parameter memory through buffers whose `rows` extent is 1.
        one = tirx.IntImm(str(rows.ty), 1)
        param_map = {}
        for param in func.params:
            if not any(isinstance(d, tirx.Var) and d.same_as(rows) for d in getattr(param, "shape", [])):
                continue
            shape = [one if isinstance(d, tirx.Var) and d.same_as(rows) else d for d in param.shape]
            param_map[param] = tirx.decl_buffer(shape, param.dtype, param.name + "_1row", data=param.data)
        single = self._single_row_rule(func)
        small = single.apply(func.specialize(param_map), target, False)  # None: keep the general kernel
        if small is None:
            return big
        small_func = small.mod["main"]
        decls = [tirx.DeclBuffer(view, data=param)
                 for param, view in zip(func.params, small_func.params) if not view.same_as(param)]
        small_body = tirx.SeqStmt([*decls, small_func.body])
        big_func = big.mod["main"]
        return big_func.with_body(tirx.IfThenElse(rows == one, small_body, big_func.body))

    def _single_row_rule(self, func: tirx.PrimFunc) -> "Matmul":
        """The rule for the one-row kernel. Quantized weights are small per row (q8_0: 1 byte, q4_1: half a
        byte per weight), so many interleaved short row streams defeat the hardware prefetchers: q8_0
        streams one weight row at a time (16 lanes, one column per tile), q4_1 reads 4 rows at a time with
        one vector accumulator each (its dequantization needs the cycles that more columns would take)."""
        storage = {str(p.dtype) for p in func.params if len(getattr(p, "shape", ())) == 2}
        if "int8" in storage:
            return Matmul(self.row_tile, 1, self.max_const_rows, 1, False, lanes=16, col_block=1)
        if "uint32" in storage:
            return Matmul(self.row_tile, 4, self.max_const_rows, 4, False, lanes=LANES, col_block=1)
        # Float weights: 2 rows x 8 lanes per column pair, 8 accumulators (streams at the bandwidth).
        return Matmul(self.row_tile, 2, self.max_const_rows, 8, False, lanes=LANES, col_block=1)

    @staticmethod
    def _schedule_side_blocks(sch: s_tir.Schedule, block, side: list[str]) -> None:
        """Elementwise pad/unpad/epilogue blocks: inline what can be, parallelise and vectorise the rest."""
        for consumer in sch.get_consumers(block):
            try:
                sch.reverse_compute_inline(consumer)
            except Exception:  # pylint: disable=broad-except
                pass
        for name in side:
            try:
                other = sch.get_sblock(name)
            except Exception:  # pylint: disable=broad-except
                continue  # inlined
            schedule_elementwise(sch, other)


def schedule_elementwise(sch: s_tir.Schedule, block) -> None:
    """Fuse a spatial block's loops, run chunks of them in parallel, vectorise the innermost lanes."""
    loops = sch.get_loops(block)
    if not loops:
        return
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    outer, inner = sch.split(fused, [None, LANES * 8])
    sch.parallel(outer)
    _, lane = sch.split(inner, [None, LANES])
    sch.vectorize(lane)
