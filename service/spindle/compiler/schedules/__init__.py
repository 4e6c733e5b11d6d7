"""CPU compilation pipeline and schedule rules for Spindle's compiled models.

`cpu_pipeline(target)` is the Relax pipeline handed to `tvm.compile(mod, target, relax_pipeline=...)`.
It is TVM's CPU pipeline (legalize, fuse, lower) with Spindle's schedule rules applied to the fused TIR
kernels right after fusion, so every kernel that the rules recognise is tiled, parallelised and vectorised.
"""

from __future__ import annotations

from .pipeline import cpu_pipeline, schedule_rules, apply_schedules

__all__ = ["cpu_pipeline", "schedule_rules", "apply_schedules"]
