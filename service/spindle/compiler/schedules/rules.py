"""The list of CPU schedule rules, in the order they are tried."""

from __future__ import annotations

from tvm.s_tir import dlight as dl

from .generic import Elementwise, RowReduction
from .matmul import Matmul


def default_rules() -> list:
    """Rules tried in order on each fused kernel; kernels no rule accepts stay unscheduled."""
    return [Matmul(), RowReduction(), Elementwise(), dl.cpu.Reduction()]
