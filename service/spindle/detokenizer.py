"""Incremental detokenization and stop-string matching for streamed generation.

``IncrementalDetokenizer`` turns a growing list of token ids into text deltas that never split a UTF-8
character: byte-level BPE tokens may each carry part of a character, so text is only released once the
decoded window no longer ends in a replacement character. ``StopMatcher`` holds back the text that could
still turn into a stop string, and reports the first stop string that appears (its text is never released).
"""

from __future__ import annotations

from typing import Callable, Sequence

Decode = Callable[[Sequence[int]], str]

_REPLACEMENT = "\ufffd"
# Tokens of already released text kept as left context so that decoders which strip a leading space (or
# merge across tokens) see the same neighbourhood as a full decode would.
_CONTEXT_TOKENS = 5


class IncrementalDetokenizer:
    """Feed token ids with ``push``; get only complete new text back.

    One decode per push: the text of the window's already released tokens is kept from the previous
    push, and the window (a few released tokens of left context plus the unreleased ones) is cut back
    to ``_CONTEXT_TOKENS`` tokens once it doubles, so the work per token stays constant.
    """

    def __init__(self, decode: Decode, prompt_tail: Sequence[int] = ()):
        self._decode = decode
        self._ids: list[int] = [int(t) for t in prompt_tail[-_CONTEXT_TOKENS:]] if prompt_tail else []
        self._read = len(self._ids)      # tokens before this are released; the window starts at 0
        self._read_text = decode(self._ids) if self._ids else ""   # decode of the window's released tokens

    def push(self, token_ids: Sequence[int]) -> str:
        """Add tokens; return the newly complete text (possibly empty)."""
        if not token_ids:
            return ""
        self._ids.extend(token_ids)
        return self._release(final=False)

    def flush(self) -> str:
        """Release whatever is left, incomplete characters shown as replacement characters."""
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        ids = self._ids
        if self._read >= len(ids):
            return ""
        before = self._read_text
        after = self._decode(ids)
        if not final and after.endswith(_REPLACEMENT):
            return ""
        # Usually ``after`` extends ``before``; when ``before`` ended inside a character (or the decoder
        # merges across tokens) only their common prefix has been released already.
        start = len(before) if after.startswith(before) else _common_prefix(before, after)
        new = after[start:]
        if not new and not final:
            return ""
        if len(ids) > 2 * _CONTEXT_TOKENS:
            del ids[:len(ids) - _CONTEXT_TOKENS]
            self._read_text = self._decode(ids)
        else:
            self._read_text = after
        self._read = len(ids)
        return new


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class StopMatcher:
    """Releases text, holding back any suffix that may still grow into one of the stop strings."""

    def __init__(self, stop_strings: Sequence[str]):
        self.stops = [s for s in stop_strings if s]
        self._hold = max((len(s) for s in self.stops), default=1) - 1
        self._pending = ""
        self.matched: str | None = None

    def push(self, text: str) -> str:
        """Add text; return what may be released now. After a match, returns only the text before it."""
        if self.matched is not None or not text:
            return ""
        if not self.stops:
            return text
        self._pending += text
        first: tuple[int, str] | None = None
        for stop in self.stops:
            at = self._pending.find(stop)
            if at >= 0 and (first is None or at < first[0]):
                first = (at, stop)
        if first is not None:
            self.matched = first[1]
            out, self._pending = self._pending[:first[0]], ""
            return out
        keep = self._partial_suffix()
        out = self._pending[:len(self._pending) - keep]
        self._pending = self._pending[len(self._pending) - keep:]
        return out

    def flush(self) -> str:
        """Release held-back text at the end of generation (no stop string can complete any more)."""
        out, self._pending = self._pending, ""
        return "" if self.matched is not None else out

    def _partial_suffix(self) -> int:
        """Length of the longest suffix of the pending text that is a proper prefix of a stop string."""
        text = self._pending
        for length in range(min(self._hold, len(text)), 0, -1):
            tail = text[len(text) - length:]
            if any(stop.startswith(tail) for stop in self.stops):
                return length
        return 0
