"""The C kernels' software prefetches (kernels/blocks.h): the mode each CPU gets, the override, results
that do not depend on it, and compiled code that still holds the prefetches.

The last test exists because GCC once deleted them unseen: a helper whose only effects were prefetch
intrinsics counted for it as a function without side effects, and every call to it that it had not
inlined went away.
"""

from __future__ import annotations

import ctypes
import platform
import re
import shutil
import subprocess

import numpy as np
import pytest

from spindle.compiler import kernels
from spindle.compiler import quantization as Q
from spindle.compiler.kernels import floatmm

from .test_qkernels import _act_scratch, _activations, _tile, _weights

NONE, PAGE, ROLLING, HEAD = 0, 1, 2, 4  # spindle_[qf]kernel_prefetch: the one-row mode, plus HEAD
X86 = platform.machine().lower() in ("x86_64", "amd64")


def _vendor() -> str:
    try:
        text = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        return ""
    match = re.search(r"^vendor_id\s*:\s*(\S+)", text, re.M)
    return match.group(1) if match else ""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One shared library per C source; `load` dlopens a fresh copy of it (its own prefetch state) under `env`."""
    root = tmp_path_factory.mktemp("prefetch")
    paths = {"q": kernels.shared_library(root / "q"), "f": floatmm.shared_library(root / "f")}
    copies = iter(range(1000))

    def load(which: str, **env: str | None):
        copy = root / f"{which}-{next(copies)}.so"
        shutil.copyfile(paths[which], copy)  # a new file: dlopen maps a new copy with its own statics
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env.items():
                if v is None:
                    mp.delenv(k, raising=False)
                else:
                    mp.setenv(k, v)
            lib = ctypes.CDLL(str(copy))
            fn = lib.spindle_qkernel_prefetch if which == "q" else lib.spindle_fkernel_prefetch
            fn.restype = ctypes.c_int32
            mode = fn()  # fixed at the first call
        return lib, mode

    return load


@pytest.mark.parametrize("which", ["q", "f"])
def test_mode_by_vendor_and_override(built, which):
    _, default = built(which, SPINDLE_PREFETCH=None, SPINDLE_PREFETCH_HEAD=None)
    intel = X86 and _vendor() == "GenuineIntel"
    assert default == (ROLLING if intel else PAGE) | HEAD
    for name, mode in (("none", NONE), ("page", PAGE), ("rolling", ROLLING)):
        assert built(which, SPINDLE_PREFETCH=name, SPINDLE_PREFETCH_HEAD="0")[1] == mode
        assert built(which, SPINDLE_PREFETCH=name, SPINDLE_PREFETCH_HEAD="1")[1] == mode | HEAD
    # an unknown name falls back to the vendor's one-row mode
    assert built(which, SPINDLE_PREFETCH="sideways", SPINDLE_PREFETCH_HEAD="0")[1] == default & ~HEAD


@pytest.mark.parametrize("fmt", Q.FORMATS)
def test_int8_results_do_not_depend_on_the_prefetch(built, fmt):
    """One row (the pass that prefetches) over SmolLM2's widths and a ragged one, bit for bit."""
    for k, n in ((576, 1537), (1536, 70)):
        arrays, x = _weights(fmt, k, n, seed=5), _activations(1, k, seed=6)
        want = Q.int8_matmul_reference(fmt, x, arrays)
        outs = []
        for name in ("none", "page", "rolling"):
            lib, _ = built("q", SPINDLE_PREFETCH=name, SPINDLE_PREFETCH_HEAD="1")
            outs.append(_tile(lib, fmt, _act_scratch(lib, x, fmt), arrays, k, n, 0, n))
        assert float(np.abs(outs[0] - want).max() / np.abs(want).max()) < 1e-5
        for out in outs[1:]:
            np.testing.assert_array_equal(out, outs[0])


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_float_results_do_not_depend_on_the_prefetch(built, dtype):
    rng = np.random.default_rng(9)
    k, n = 576, 301
    w = rng.standard_normal((n, k)).astype(dtype)
    x = rng.standard_normal((1, k)).astype(dtype)
    code = floatmm.DTYPE_CODES[dtype]
    outs = []
    for name in ("none", "page", "rolling"):
        lib, _ = built("f", SPINDLE_PREFETCH=name, SPINDLE_PREFETCH_HEAD="1")
        y = np.full((1, n), np.nan, dtype)
        lib.spindle_fmm(ctypes.c_void_p(x.ctypes.data), ctypes.c_int64(1), ctypes.c_void_p(w.ctypes.data),
                        ctypes.c_int64(k), ctypes.c_int64(0), ctypes.c_int64(n), ctypes.c_void_p(y.ctypes.data),
                        None, ctypes.c_int64(n), ctypes.c_int32(code), ctypes.c_int32(code))
        outs.append(y)
    want = x.astype(np.float64) @ w.astype(np.float64).T
    assert float(np.abs(outs[0] - want).max() / np.abs(want).max()) < 2e-3
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])


@pytest.mark.skipif(not X86, reason="the prefetches are x86 instructions")
@pytest.mark.parametrize("source", [kernels.SOURCE, floatmm.SOURCE], ids=lambda p: p.name)
def test_compiled_kernels_keep_their_prefetches(tmp_path, source):
    """The assembly of each C source, built as the model libraries build it, holds the rolling prefetch
    (into L2, ROLL_AHEAD = 8192 bytes on), the int8 kernels' page prefetch (its 4 KB page mask) and the head
    prefetch into L1 (prefetcht0: only the blocks' head prefetch uses it)."""
    out = tmp_path / (source.stem + ".s")
    proc = subprocess.run([kernels.compiler(), *kernels.CFLAGS, "-S", str(source), "-o", str(out)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    asm = out.read_text()
    assert re.search(r"prefetcht1\s+8192\(", asm), "the rolling prefetch is gone"
    if source == kernels.SOURCE:  # the float kernel's one-row pass takes the rolling prefetch or none
        assert re.search(r"\$-4096\b|\$4095\b", asm), "the page prefetch is gone"
    assert re.search(r"\bprefetcht0\b", asm), "the head prefetch is gone"
