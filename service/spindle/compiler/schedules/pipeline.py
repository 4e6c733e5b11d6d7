"""The Relax pipeline for the CPU, with Spindle's schedule rules applied after operator fusion."""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic


def schedule_rules() -> list:
    """The ordered CPU schedule rules; the first rule that accepts a kernel schedules it."""
    from .rules import default_rules  # pylint: disable=import-outside-toplevel

    return default_rules()


def apply_schedules(rules: list | None = None) -> tvm.transform.Pass:
    """A module pass applying `rules` (default: `schedule_rules()`) to every unscheduled PrimFunc."""
    from tvm.s_tir import dlight as dl  # pylint: disable=import-outside-toplevel

    return dl.ApplyDefaultSchedule(*(schedule_rules() if rules is None else rules))


def cpu_pipeline(target: tvm.target.Target, schedule: bool = True) -> tvm.transform.Pass:
    """The Relax pipeline for `tvm.compile(mod, target, relax_pipeline=cpu_pipeline(target))`.

    With `schedule=False` it is TVM's generic CPU pipeline (unscheduled kernels, for reference tests).
    """
    target = tvm.target.Target(target) if not isinstance(target, tvm.target.Target) else target

    @tvm.transform.module_pass(opt_level=0, name="SpindleCPUPipeline")
    def _pipeline(mod: tvm.ir.IRModule, _ctx: tvm.transform.PassContext) -> tvm.ir.IRModule:
        # x @ W.T stays one matmul reading W[n, k] instead of transposing the weight on every call.
        passes = [relax.transform.FuseTransposeMatmul()]
        passes += list(cpu_generic.library_dispatch_passes(target))
        passes += list(cpu_generic.legalize_passes(target))
        if schedule:
            passes.append(relax.transform.DeadCodeElimination())
            passes.append(apply_schedules())
        passes += list(cpu_generic.dataflow_lower_passes(target))
        passes += list(cpu_generic.finalize_passes(target))
        with target:
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline
