"""Live requests on the server: per-branch detokenization and stop strings, bounded output queues.

Engine outputs reach ``RequestTable.dispatch`` on the event loop (threaded mode: the stream-back thread
hands each whole batch over with one ``loop.call_soon_threadsafe``; stepped mode: the Step RPC). Each
output is detokenized once, here, into light ``Delta`` tuples that go straight onto the request's
bounded queue; the protobuf message is built once per message sent (``build_response``).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any, Callable, Iterable, NamedTuple

from spindle_client.v1 import engine_pb2 as pb

from spindle.detokenizer import IncrementalDetokenizer, StopMatcher

from .convert import ResolvedConfig, finish_reason_proto, usage_proto
from .errors import already_exists, queue_full, shutting_down
from .model import ServedModel


class Delta(NamedTuple):
    """New output of one branch: released text, token ids, and logprobs (protobuf) when asked for."""

    index: int
    text: str
    token_ids: list[int]
    logprobs: list[pb.TokenLogprob] | None = None


def merge_deltas(into: list[Delta], new: Iterable[Delta]) -> list[Delta]:
    """``into`` followed by ``new``, deltas of the same branch concatenated (inputs are not modified)."""
    merged: dict[int, Delta] = {}
    for d in (*into, *new):
        old = merged.get(d.index)
        if old is None:
            merged[d.index] = d
            continue
        logprobs = old.logprobs
        if d.logprobs:
            logprobs = [*(logprobs or ()), *d.logprobs]
        merged[d.index] = Delta(d.index, old.text + d.text, [*old.token_ids, *d.token_ids], logprobs)
    return list(merged.values())


def build_response(message_type: Any, request_id: str, deltas: Iterable[Delta],
                   final: pb.FinalOutput | None) -> Any:
    """One GenerateResponse / FollowRequestResponse / RequestOutput; empty fields are left unset."""
    msg = message_type(request_id=request_id)
    add = msg.deltas.add
    for d in deltas:
        m = add(index=d.index, text=d.text, token_ids=d.token_ids)
        if d.logprobs:
            m.logprobs.extend(d.logprobs)
    if final is not None:
        msg.final.CopyFrom(final)
    return msg


def _token_count(deltas: Iterable[Delta]) -> int:
    return sum(len(d.token_ids) for d in deltas)


class Pacing(NamedTuple):
    """How a stream's messages are paced: after the first one, a message goes out once ``tokens`` tokens
    are queued and ``interval_s`` seconds have passed since the previous one (the final never waits)."""

    tokens: int = 1
    interval_s: float = 0.0


class OutputQueue:
    """A bounded queue of (deltas, final) items for one reader; never blocks the writer.

    When the reader falls ``maxsize`` items behind, new deltas are merged into the newest queued item
    instead of growing the queue: a slow reader receives fewer, larger messages and loses nothing.
    A waiting reader is woken through one future; it takes everything queued at once (a list swap).

    Pacing: after the first message, the reader is woken only once ``pacing.tokens`` tokens are queued
    and ``pacing.interval_s`` seconds have passed since it last took output (a timer wakes it when the
    tokens are there first); the first message and the final output are never held back. Fewer, larger
    messages carry the same text and cost the server and the client less CPU per generated token.
    """

    def __init__(self, maxsize: int = 64, pacing: Pacing = Pacing()):
        self.maxsize = max(1, maxsize)
        self.stream_interval = max(1, pacing.tokens)
        self.stream_interval_s = max(0.0, float(pacing.interval_s))
        self._items: list[tuple[list[Delta], pb.FinalOutput | None]] = []
        self._waiter: asyncio.Future | None = None
        self._tokens = 0        # tokens in the queued items
        self._sent_first = False
        self._last_taken = 0.0  # time.monotonic() of the last take
        self._timer: asyncio.TimerHandle | None = None
        self._due = False       # the pacing timer fired since the last take
        self.merged = 0

    def _interval_left(self) -> float:
        """Seconds until the next message may go out (0 when it may go now)."""
        if self.stream_interval_s <= 0 or self._due:
            return 0.0
        return max(0.0, self._last_taken + self.stream_interval_s - time.monotonic())

    def _ready(self) -> bool:
        items = self._items
        if not items:
            return False
        if not self._sent_first or items[-1][1] is not None:
            return True
        return self._tokens >= self.stream_interval and self._interval_left() == 0.0

    def _wake_or_arm(self) -> None:
        """With a reader waiting: wake it if output may go out; if only the interval holds it, set a timer."""
        if self._ready():
            waiter, self._waiter = self._waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif self._items and self._tokens >= self.stream_interval and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._interval_left(), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._due = True
        if self._waiter is not None:
            self._wake_or_arm()

    def _taken(self) -> None:
        self._sent_first = True
        self._due = False
        self._last_taken = time.monotonic()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def put(self, deltas: list[Delta], final: pb.FinalOutput | None) -> None:
        if not deltas and final is None:
            return
        items = self._items
        if len(items) >= self.maxsize:
            last_deltas, last_final = items[-1]
            items[-1] = (merge_deltas(last_deltas, deltas), final or last_final)
            self.merged += 1
        else:
            items.append((deltas, final))
        self._tokens += _token_count(deltas)
        if self._waiter is not None:
            self._wake_or_arm()

    async def _wait(self) -> None:
        while not self._ready():
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            self._wake_or_arm()  # not ready: at most sets the timer
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None

    async def get(self) -> tuple[list[Delta], pb.FinalOutput | None]:
        await self._wait()
        item = self._items.pop(0)
        self._taken()
        self._tokens -= _token_count(item[0])
        return item

    async def get_all(self) -> tuple[list[Delta], pb.FinalOutput | None]:
        """Wait for output, then take everything queued up to a final at once as one merged item."""
        await self._wait()
        items = self._items
        self._taken()
        self._tokens = 0  # everything up to a final is taken, and nothing follows a final
        if len(items) == 1:
            self._items = []
            return items[0]
        deltas, final = items[0]
        taken = 1
        while taken < len(items) and final is None:
            more, final = items[taken]
            deltas = merge_deltas(deltas, more)
            taken += 1
        del items[:taken]
        return deltas, final

    def __len__(self) -> int:
        return len(self._items)


class _Branch:
    def __init__(self, index: int, model: ServedModel, prompt_ids: list[int], stop_strings: list[str]):
        self.index = index
        self.detok = IncrementalDetokenizer(model.decode, prompt_ids)
        self.stops = StopMatcher(stop_strings)
        self.done = False
        self.finish = pb.FINISH_REASON_UNSPECIFIED
        self.stop_string: str | None = None
        self.stop_token: int | None = None
        self.tokens = 0

    def result(self) -> pb.BranchResult:
        r = pb.BranchResult(index=self.index, finish_reason=self.finish, completion_tokens=self.tokens)
        if self.stop_string is not None:
            r.stop_string = self.stop_string
        elif self.stop_token is not None:
            r.stop_token_id = self.stop_token
        return r


class LiveRequest:
    """Server-side state of one engine request."""

    def __init__(self, request_id: str, prompt_ids: list[int], resolved: ResolvedConfig, model: ServedModel,
                 queue_size: int | None, pacing: Pacing = Pacing()):
        self.request_id = request_id
        self.prompt_ids = prompt_ids
        self.resolved = resolved
        self.model = model
        n = resolved.engine_kwargs["n"]
        self.branches = [_Branch(i, model, prompt_ids, resolved.stop_strings) for i in range(n)]
        self.pacing = pacing
        self.queues: list[OutputQueue] = [OutputQueue(queue_size, pacing)] if queue_size else []
        self.done = asyncio.Event()
        self.final: pb.FinalOutput | None = None
        self.abort_sent = False
        self.t_arrival = time.perf_counter()
        self.t_first: float | None = None

    def follow(self, queue_size: int) -> OutputQueue:
        """A new reader of this request's outputs from now on; drop it with ``unfollow``."""
        queue = OutputQueue(queue_size, self.pacing)
        self.queues.append(queue)
        return queue

    def unfollow(self, queue: OutputQueue) -> None:
        if queue in self.queues:
            self.queues.remove(queue)

    def publish(self, deltas: list[Delta], final: pb.FinalOutput | None) -> None:
        for queue in self.queues:
            queue.put(deltas, final)

    def process(self, out: Any) -> tuple[list[Delta], pb.FinalOutput | None, bool]:
        """Turn one engine RequestOutput into (deltas, final or None, whether the engine should abort)."""
        deltas = []
        for bd in out.branches or ():
            d = self._branch_delta(bd)
            if d is not None:
                deltas.append(d)
        want_abort = not out.finished and not self.abort_sent and all(b.done for b in self.branches)
        final = self._final(out) if out.finished else None
        return deltas, final, want_abort

    def _branch_delta(self, bd: Any) -> Delta | None:
        b = self.branches[bd.index]
        if b.done:
            return None
        toks = bd.token_ids
        if not isinstance(toks, list):
            toks = [int(t) for t in toks or ()]
        released = ""
        logprobs = bd.logprobs
        if toks:
            if self.t_first is None:
                self.t_first = time.perf_counter()
            if b.stops.stops:
                # token by token, so that the delta ends with the token that completed a stop string (one
                # output may carry several steps' tokens)
                for i, tok in enumerate(toks):
                    text = b.detok.push((tok,))
                    if text:
                        released += b.stops.push(text)
                        if b.stops.matched is not None:
                            toks = toks[:i + 1]
                            if logprobs:
                                logprobs = logprobs[:i + 1]
                            break
            else:
                released = b.detok.push(toks)
            b.tokens += len(toks)
        reason = finish_reason_proto(bd.finish_reason)
        if b.stops.matched is None and reason:
            if reason == pb.FINISH_REASON_STOP:
                b.stop_token = bd.stop_token_id  # the engine leaves the stop token out of token_ids
            tail = b.detok.flush()
            if tail:
                released += b.stops.push(tail)
        if b.stops.matched is not None:
            b.done, b.finish, b.stop_string, b.stop_token = True, pb.FINISH_REASON_STOP, b.stops.matched, None
        elif reason:
            released += b.stops.flush()
            b.done, b.finish = True, reason
        logprobs = self._logprobs(logprobs) if logprobs else None
        if not released and not toks and not logprobs:
            return None
        return Delta(b.index, released, toks, logprobs)

    def _logprobs(self, entries: Iterable[Any]) -> list[pb.TokenLogprob]:
        text = self.model.token_text
        out = []
        for e in entries:
            lp = pb.TokenLogprob(token_id=int(e.token_id), token=text(e.token_id), logprob=float(e.logprob))
            for tok, val in e.top or ():
                lp.top_logprobs.add(token_id=int(tok), token=text(tok), logprob=float(val))
            out.append(lp)
        return out

    def _final(self, out: Any) -> pb.FinalOutput:
        error = getattr(out, "error", None)
        for b in self.branches:
            if not b.done:
                b.done = True
                b.finish = pb.FINISH_REASON_ERROR if error else pb.FINISH_REASON_ABORT
        now = time.perf_counter()
        ttft = (self.t_first - self.t_arrival) if self.t_first is not None else None
        return self.final_from(out.usage, now - self.t_arrival, ttft, error or "")

    def final_from(self, engine_usage: Any, total_s: float, ttft_s: float | None, error: str) -> pb.FinalOutput:
        completion = getattr(engine_usage, "completion_tokens", None)
        if completion is None:
            completion = sum(b.tokens for b in self.branches)
        usage = usage_proto(engine_usage, len(self.prompt_ids), int(completion), ttft_s, total_s)
        return pb.FinalOutput(branches=[b.result() for b in self.branches], usage=usage,
                              effective_config=self.resolved.effective, prompt_token_ids=self.prompt_ids,
                              error_message=error)

    def abort_locally(self) -> pb.FinalOutput:
        """Finish the request on the server side only (after Reset, or when the engine is gone)."""
        for b in self.branches:
            if not b.done:
                b.done, b.finish = True, pb.FINISH_REASON_ABORT
        ttft = (self.t_first - self.t_arrival) if self.t_first is not None else None
        return self.final_from(None, time.perf_counter() - self.t_arrival, ttft, "")


class RequestTable:
    """The live requests of a server, keyed by id, with the admission rules (capacity, draining)."""

    def __init__(self, max_live: int, queue_size: int, abort: Callable[[str], None], finish_on_stop: bool = False,
                 pacing: Pacing = Pacing()):
        self.max_live = max_live
        #: How every stream's messages are paced (the first and the final message are never held).
        self.pacing = pacing
        #: Finish a request on the server as soon as a stop string ends it (stepped mode: the engine
        #: confirms the abort only at its next step, which the client may never ask for).
        self.finish_on_stop = finish_on_stop
        self.queue_size = queue_size
        self.live: dict[str, LiveRequest] = {}
        self.draining = False
        self._abort = abort
        self.idle = asyncio.Event()
        self.idle.set()

    def new_id(self) -> str:
        return "req-" + secrets.token_hex(8)

    def admit(self, request_id: str) -> str:
        """Check a new request may enter; returns its id (assigned when empty)."""
        if self.draining:
            raise shutting_down()
        request_id = request_id or self.new_id()
        if request_id in self.live:
            raise already_exists(request_id)
        if len(self.live) >= self.max_live:
            raise queue_full(len(self.live), self.max_live)
        return request_id

    def register(self, req: LiveRequest) -> None:
        self.live[req.request_id] = req
        self.idle.clear()

    def unregister(self, request_id: str) -> None:
        self.live.pop(request_id, None)
        if not self.live:
            self.idle.set()

    def dispatch(self, outputs: Iterable[Any], collect: bool = False) -> list[pb.RequestOutput]:
        """Apply a batch of engine outputs, in order, to the live requests' queues.

        With ``collect`` (the Step RPC) it returns what the batch produced as protobuf, and a request whose
        every branch ended on a stop string is finished at once (``finish_on_stop``), after the engine abort
        has been asked for: the Step that saw the stop string reports the request as finished with STOP.
        """
        result: list[pb.RequestOutput] = []
        live = self.live
        for out in outputs:
            req = live.get(out.request_id)
            if req is None:
                continue  # finished on the server side already (stop string, reset)
            deltas, final, want_abort = req.process(out)
            if want_abort:
                req.abort_sent = True
                self._abort(req.request_id)
                if self.finish_on_stop:
                    final = req.abort_locally()
            if deltas or final is not None:
                req.publish(deltas, final)
                if collect:
                    result.append(build_response(pb.RequestOutput, req.request_id, deltas, final))
            if final is not None:
                req.final = final
                req.done.set()
                self.unregister(req.request_id)
        return result

    def finish_all_locally(self) -> int:
        """End every live request with ABORT on the server side (after an engine reset)."""
        n = 0
        for req in list(self.live.values()):
            final = req.abort_locally()
            req.publish([], final)
            req.final = final
            req.done.set()
            self.unregister(req.request_id)
            n += 1
        return n
