"""Bounds on a JSON body checked on its raw bytes, before ``json.loads`` builds a single Python object.

Why before parsing: ``json.loads`` builds every object a body holds before any
check can look at it, and what it builds can cost far more than the body. A
13.5 MB body of empty objects (``{},`` is 3 bytes) becomes 4.5 million dicts,
about 360 MB; a body nested 100,000 levels deep makes the parser recurse until
it raises ``RecursionError``. So the REST server feeds each chunk of a body to
:class:`JsonScanner` as it arrives, and refuses the body (naming the bound) as
soon as it nests deeper, or holds more values, lists, objects or strings, than
the largest legal request of the model asked for (:class:`JsonLimits`).

How, in NumPy on chunks of at most :data:`CHUNK_BYTES` (a 37 MB body scans in
about 0.1 s, with a few MB of temporaries): a byte table picks out the bytes
that matter (``[ ] { } , " \\``); a quote is escaped when the run of
backslashes before it is odd; the unescaped quotes toggle the string state, and
only brackets and commas outside strings count. Depth is the running sum of
+1 for ``[``/``{`` and -1 for ``]``/``}``; values are counted by their commas.
String state, depth and a trailing run of backslashes carry over from one chunk
to the next. In UTF-8 (the only encoding the server accepts) the bytes of a
multi-byte character are all >= 0x80, so a quote or bracket byte is always that
character. The counts are exact for valid JSON, and for invalid JSON they cover
at least the valid prefix -- all the parser builds before it fails -- so a body
that passes cannot cost more than the bounds allow.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serving.status import Refusal

CHUNK_BYTES = 1 << 16

_OPEN_LIST, _OPEN_OBJECT, _CLOSE, _COMMA, _QUOTE, _BACKSLASH = 1, 2, 3, 4, 5, 6
_CLASS = np.zeros(256, np.int8)
for _byte, _code in ((b"[", _OPEN_LIST), (b"{", _OPEN_OBJECT), (b"]", _CLOSE), (b"}", _CLOSE), (b",", _COMMA),
                     (b'"', _QUOTE), (b"\\", _BACKSLASH)):
    _CLASS[_byte[0]] = _code


class JsonTooComplex(Refusal, ValueError):
    """The body exceeds one of the bounds (INVALID_ARGUMENT); the message names which, the count reached, and the bound."""


@dataclass(frozen=True)
class JsonLimits:
    """The most a legal request's JSON holds (serving/rest_json.py derives them from the servable)."""

    max_depth: int  # nesting of lists and objects
    max_values: int  # commas: every value but the first of each container
    max_lists: int
    max_objects: int
    max_strings: int  # keys included


@dataclass
class JsonCounts:
    depth: int = 0  # current nesting (after the bytes fed so far)
    max_depth: int = 0
    values: int = 0  # commas
    lists: int = 0
    objects: int = 0
    strings: int = 0
    bytes: int = 0


class JsonScanner:
    """Feed a body's bytes chunk by chunk; :class:`JsonTooComplex` as soon as a bound is exceeded."""

    def __init__(self, limits: JsonLimits, what: str = "the request body"):
        self.limits = limits
        self.what = what
        self.counts = JsonCounts()
        self._in_string = False
        self._backslashes = 0  # length of the run of backslashes that ended the previous chunk

    def feed(self, data) -> None:
        view = np.frombuffer(data, np.uint8)
        for start in range(0, len(view), CHUNK_BYTES):
            self._feed_chunk(view[start:start + CHUNK_BYTES])
            self._check()

    def _feed_chunk(self, chunk: np.ndarray) -> None:
        counts = self.counts
        counts.bytes += len(chunk)
        classes = _CLASS[chunk]
        pos = np.flatnonzero(classes)
        if not pos.size:
            self._backslashes = 0
            return
        cls = classes[pos]
        del classes
        is_quote = cls == _QUOTE
        is_backslash = cls == _BACKSLASH
        toggles = is_quote
        if self._backslashes or is_backslash.any():
            toggles = is_quote & ~self._escaped(pos, is_quote, is_backslash, len(chunk))
        else:
            self._backslashes = 0
        before = np.cumsum(toggles, dtype=np.int64)
        total = int(before[-1])
        before -= toggles  # quotes before each byte of interest (exclusive)
        outside = ((before + self._in_string) & 1) == 0
        counts.strings += int(np.count_nonzero(toggles & outside))  # quotes that open a string
        self._in_string = bool((total + self._in_string) & 1)
        structural = cls[outside & (cls <= _COMMA)]
        if not structural.size:
            return
        counts.lists += int(np.count_nonzero(structural == _OPEN_LIST))
        counts.objects += int(np.count_nonzero(structural == _OPEN_OBJECT))
        counts.values += int(np.count_nonzero(structural == _COMMA))
        step = (structural <= _OPEN_OBJECT).astype(np.int64) - (structural == _CLOSE)
        depth = np.cumsum(step)
        depth += counts.depth
        counts.max_depth = max(counts.max_depth, int(depth.max()))
        counts.depth = int(depth[-1])

    def _escaped(self, pos, is_quote, is_backslash, length: int) -> np.ndarray:
        """Which quotes of the chunk follow an odd run of backslashes (the run may begin in an earlier chunk)."""
        slashes = pos[is_backslash]
        quotes = pos[is_quote]
        if slashes.size:
            breaks = np.flatnonzero(np.diff(slashes) != 1)
            starts = slashes[np.concatenate(([0], breaks + 1))]
            ends = slashes[np.concatenate((breaks, [slashes.size - 1]))]
            runs = ends - starts + 1
            if starts[0] == 0:
                runs[0] += self._backslashes
        else:
            ends = runs = np.zeros(0, np.int64)
        if self._backslashes and not (slashes.size and starts[0] == 0):
            ends = np.concatenate(([-1], ends))  # the run that ended the previous chunk
            runs = np.concatenate(([self._backslashes], runs))
        self._backslashes = int(runs[-1]) if slashes.size and ends[-1] == length - 1 else 0
        if not ends.size:
            return np.zeros(pos.size, bool)
        at = np.searchsorted(ends, quotes - 1)
        inside = at < ends.size
        at = np.minimum(at, ends.size - 1)
        escaped_quotes = inside & (ends[at] == quotes - 1) & (runs[at] % 2 == 1)
        escaped = np.zeros(pos.size, bool)
        escaped[np.flatnonzero(is_quote)[escaped_quotes]] = True
        return escaped

    def _check(self) -> None:
        counts, limits = self.counts, self.limits
        if counts.max_depth > limits.max_depth:
            raise JsonTooComplex(f"{self.what} nests lists/objects {counts.max_depth} or more levels deep; "
                                 f"a legal request nests at most {limits.max_depth}")
        for noun, got, bound in (("values", counts.values, limits.max_values),
                                 ("lists", counts.lists, limits.max_lists),
                                 ("objects", counts.objects, limits.max_objects),
                                 ("strings (keys included)", counts.strings, limits.max_strings)):
            if got > bound:
                raise JsonTooComplex(f"{self.what} holds {got} or more {noun}; a legal request holds at most "
                                     f"{bound}")


def scan(data, limits: JsonLimits, what: str = "the request body") -> JsonCounts:
    """The counts of a whole body (:class:`JsonTooComplex` when a bound is exceeded)."""
    scanner = JsonScanner(limits, what)
    scanner.feed(data)
    return scanner.counts
