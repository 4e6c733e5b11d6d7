"""Print the path of the tiny test artifact, building it into the shared test cache if needed.

Used by ``mk/engine.mk`` to give the C++ stress driver the same model the Python tests use.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path


def main() -> None:
    root = Path(os.environ.get("SPINDLE_TEST_CACHE") or Path.home() / ".cache" / "spindle" / "test-artifacts")
    root.mkdir(parents=True, exist_ok=True)
    from spindle.compiler.testing import cached_tiny_artifact  # pylint: disable=import-outside-toplevel

    with contextlib.redirect_stdout(sys.stderr):  # only the path goes to stdout
        path = cached_tiny_artifact(root, dtype="float32")
    sys.stdout.write(f"{path}\n")


if __name__ == "__main__":
    main()
