"""The ``spindle`` command: ``serve`` a model over gRPC, ``generate`` text from a server, ``compile`` a model.

    spindle serve [MODEL] [--host 127.0.0.1] [--port 50051] [--mode threaded|stepped] [--dtype q4_1]
    spindle generate "Once upon a time" [--address 127.0.0.1:50051] [--max-tokens 64] [--temperature 0]
    spindle compile [MODEL] [--dtype ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

DEFAULT_ADDRESS = os.environ.get("SPINDLE_ADDRESS", "127.0.0.1:50051")


def _add_serve(subparsers) -> None:
    from spindle.compiler.api import DEFAULT_DTYPE
    from spindle.compiler.build import DTYPES

    from .server.app import ServerOptions

    d = ServerOptions()
    p = subparsers.add_parser(
        "serve", help="serve a model over gRPC (spindle.v1.EngineService)",
        description="Serve a model over gRPC. MODEL is a compiled artifact directory, a .gguf file or a Hugging "
                    "Face folder (compiled on first use and cached); omitted, the embedded SmolLM2-135M-Instruct. "
                    "SIGTERM or Ctrl-C drains: new requests are refused, live ones get the grace period, then the "
                    "rest are aborted.")
    p.add_argument("model", nargs="?", default=None, help="artifact directory, .gguf file or HF folder")
    p.add_argument("--host", default=d.host, help=f"address to listen on (default {d.host}; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=d.port, help=f"port (default {d.port}; 0 picks a free one)")
    p.add_argument("--mode", choices=("threaded", "stepped"), default=d.mode,
                   help="threaded: a background loop steps the engine (default); stepped: clients call Step")
    p.add_argument("--dtype", choices=DTYPES, default=DEFAULT_DTYPE,
                   help=f"weight format when MODEL must be compiled (default {DEFAULT_DTYPE})")
    p.add_argument("--device", default=d.device, help="cpu (default) or cuda")
    p.add_argument("--max-queued-requests", type=int, default=d.max_queued_requests,
                   help=f"live requests before RESOURCE_EXHAUSTED (default {d.max_queued_requests})")
    p.add_argument("--max-message-bytes", type=int, default=d.max_message_bytes,
                   help=f"largest gRPC message in either direction (default {d.max_message_bytes})")
    p.add_argument("--stream-interval", type=_positive_int, default=d.stream_interval,
                   help="least tokens per streamed message: 1 sends whatever is ready (default); N > 1 "
                        "sends fewer, larger messages (the first token is never held back), which costs less "
                        "CPU per token where the model uses every core")
    p.add_argument("--stream-interval-ms", type=_milliseconds, default=d.stream_interval_ms,
                   help="least time between two messages of a stream: tokens that come sooner wait and go "
                        "out together (a request's first tokens and its final message are never held back; "
                        f"default {d.stream_interval_ms:g}, 0 sends each step's tokens at once)")
    p.add_argument("--grace-period", type=float, default=d.grace_period_s,
                   help=f"seconds live requests get to finish on SIGTERM (default {d.grace_period_s:g})")
    p.add_argument("--engine-mode", choices=("server", "local", "interactive"), default=d.engine_mode,
                   help="engine sizing preset: server runs the model's full batch (default), local 4 sequences, "
                        "interactive 1")
    p.add_argument("--max-num-sequence", type=int, default=None, help="sequences run at once (default: the preset's)")
    p.add_argument("--max-total-sequence-length", type=int, default=None,
                   help="KV cache size in tokens over all sequences (default: the preset's)")
    p.add_argument("--admission-window-ms", type=_milliseconds, default=None,
                   help="when a request reaches the idle engine, wait up to this long while more arrive so that a "
                        "burst shares one prefill (stops after an eighth of it without a new request; default: "
                        "the preset's, 8 ms for server, 0 otherwise)")
    p.add_argument("--max-messages-per-s", type=_messages_per_s, default=d.max_messages_per_s,
                   help="threaded mode: streamed messages per second over all streams; with N streams a stream gets "
                        "a message at most every N / this seconds (and every --stream-interval-ms), its tokens "
                        "merged; first tokens and finishes go at once (default %(default)s; 0: no bound)")
    p.add_argument("--accept-ahead", type=_calls_ahead, default=d.accept_ahead,
                   help="Generate calls to request from gRPC core ahead of the one grpc.aio keeps, so that a burst "
                        "of calls is accepted at once rather than one per turn of the event loop (default "
                        "%(default)s; 0: grpc.aio's own accept loop only)")
    p.add_argument("--no-batch-scheduling", dest="batch_scheduling", action="store_false",
                   help="leave the serving threads (event loop, gRPC, stream-back) in the default scheduling class "
                        "instead of SCHED_BATCH, where they do not preempt the model's compute threads")
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    p.set_defaults(func=_serve)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _number_in(cast, low: float, high: float, unit: str):
    """An argparse type: ``cast(text)`` within ``[low, high]``."""
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {unit}, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {low} to {high} {unit}, got {value:g}")
        return value
    return parse


_messages_per_s = _number_in(int, 0, 1_000_000, "messages per second")
_milliseconds = _number_in(float, 0, 10_000, "milliseconds")
_calls_ahead = _number_in(int, 0, 1024, "calls")


def resolve_model(model: str | None, dtype: str, progress: bool = True) -> Path:
    """An artifact directory for MODEL: itself when already compiled, else the cached compilation."""
    if model is not None and (Path(model) / "spindle-config.json").is_file():
        return Path(model)
    from spindle.compiler.api import compile_model

    return compile_model(model, dtype=dtype, progress=progress)


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from spindle.compiler.build import CompileError

    from .server.app import ServerOptions, serve

    try:
        model_dir = resolve_model(args.model, args.dtype, progress=True)
    except CompileError as exc:
        print(f"spindle serve: error: {exc}", file=sys.stderr)
        return 2
    options = ServerOptions(host=args.host, port=args.port, mode=args.mode,
                            max_queued_requests=args.max_queued_requests, max_message_bytes=args.max_message_bytes,
                            grace_period_s=args.grace_period, device=args.device, engine_mode=args.engine_mode,
                            stream_interval=args.stream_interval, stream_interval_ms=args.stream_interval_ms,
                            admission_window_us=None if args.admission_window_ms is None
                            else int(round(args.admission_window_ms * 1000)),
                            max_num_sequence=args.max_num_sequence,
                            max_total_sequence_length=args.max_total_sequence_length,
                            max_messages_per_s=args.max_messages_per_s, batch_scheduling=args.batch_scheduling,
                            accept_ahead=args.accept_ahead)
    try:
        asyncio.run(serve(model_dir, options))
    except OSError as exc:
        print(f"spindle serve: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _add_generate(subparsers) -> None:
    p = subparsers.add_parser("generate", help="generate text from a running server",
                              description="Stream a generation from a Spindle server to stdout.")
    p.add_argument("prompt", help="the prompt (with --chat: the user message)")
    p.add_argument("--address", default=DEFAULT_ADDRESS, help=f"server address (default {DEFAULT_ADDRESS})")
    p.add_argument("--chat", action="store_true", help="send the prompt as a chat user message")
    p.add_argument("--system", default=None, help="with --chat: a system message first")
    p.add_argument("--max-tokens", type=int, default=64, help="most tokens to generate (default 64)")
    p.add_argument("--temperature", type=float, default=None, help="0 for greedy (default 1.0)")
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=[], help="a stop string (repeatable)")
    p.add_argument("--timeout", type=float, default=None, help="deadline in seconds")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON instead of streaming text")
    p.set_defaults(func=_generate)


def _generate(args: argparse.Namespace) -> int:
    from spindle_client import SpindleError, SyncClient

    if args.chat:
        messages = ([{"role": "system", "content": args.system}] if args.system else [])
        messages.append({"role": "user", "content": args.prompt})
        prompt = {"messages": messages}
    else:
        prompt = {"prompt": args.prompt}
    config = dict(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                  seed=args.seed, stop_strings=args.stop or None)
    try:
        with SyncClient(args.address, timeout=args.timeout) as client:
            stream = client.stream(**prompt, **config)
            for delta in stream:
                if not args.json:
                    sys.stdout.write(delta.text)
                    sys.stdout.flush()
            r = stream.result
    except SpindleError as exc:
        print(f"spindle generate: {exc.code.name}: {exc.message}", file=sys.stderr)
        for v in exc.field_violations:
            print(f"  {v.field}: {v.description}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"request_id": r.request_id, "text": r.text, "token_ids": r.token_ids,
                          "finish_reason": r.finish_reason, "matched_stop": r.matched_stop, "seed": r.seed,
                          "usage": vars(r.usage) if r.usage else None}, indent=2))
    else:
        print()
        u = r.usage
        print(f"[{r.finish_reason}; {u.prompt_tokens} prompt + {u.completion_tokens} completion tokens; "
              f"first token {u.time_to_first_token_ms:.0f} ms; total {u.total_time_ms:.0f} ms]", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from spindle.compiler import command as compile_command

    parser = argparse.ArgumentParser(prog="spindle", description="Serve large language models over gRPC.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    _add_generate(sub)
    compile_command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
