"""Running requests on a version: chunks, length buckets and server-side batching like TF Serving's.

Why: (1) concurrent requests merged into one model call cost less than run one
by one (TF Serving's ``--enable_batching``); (2) an XLA-compiled signature
compiles once per input shape (seconds each), so shapes are padded to a small
set of buckets and the set of shapes stays bounded; (3) a request is run in
chunks and the client's deadline or cancel is checked before each one, so
abandoned work stops within a chunk, and so does the server after ``--grace``.

Shapes: a model call gets (batch, Lq, Lr) padded up to an allowed batch size
(powers of two up to ``max_batch_size``) and to the smallest of
``signature.QUERY_BUCKETS`` / ``signature.REFERENCE_BUCKETS`` that holds it.
Padded steps lie beyond each row's length and padded rows have length 1, so
no valid output changes (vreloc_tf/model/layers.py: padding never changes a valid
step); outputs are cut back to each request's own shape.

Chunks: at most ``max_batch_size`` pairs and ``max_batch_steps`` padded
reference steps (batch x Lr) per model call; a larger request is split.
With batching, chunks of concurrent requests that share a length bucket are
merged (FIFO) into one call; a batch thread waits up to
``batch_timeout_micros`` for more once a first chunk is queued (0: take what is
queued, which under load is already a full batch). ``num_batch_threads`` calls
run at once (one per core by default), so one batch runs while the next forms.
A due batch is shared out between free batch threads and, with XLA, cut to a
size that needs no padded rows (``Executor._take_batch``). Batching is on by
default: it measured faster with and without XLA (serving/README.md).
"""
from __future__ import annotations

import bisect
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from serving import signature as sig

log = logging.getLogger("serving.batching")
Arrays = Dict[str, np.ndarray]


class Abandoned(Exception):
    """The client gave up (deadline, cancel) or the server is stopping: the rest of the request is not run."""


class WouldMissDeadline(Abandoned):
    """Not started: the call needs a shape not compiled yet, and compiling takes longer than the deadline leaves.

    Why refuse rather than start: an XLA compile cannot be interrupted, so a
    compile started for a client that leaves keeps a core busy for seconds for
    nobody (serving/README.md, "Deadlines").
    """


@dataclass(frozen=True)
class BatchingOptions:
    """How requests are run (defaults in serving/signature.py, flags of ``vreloc serve``)."""

    enabled: bool = True  # on by default: it measured faster with and without XLA (serving/README.md)
    max_batch_size: int = sig.MAX_BATCH_SIZE
    batch_timeout_micros: int = sig.BATCH_TIMEOUT_MICROS
    max_batch_steps: int = sig.MAX_BATCH_STEPS
    num_batch_threads: int = 0  # model calls running at once (TF Serving's num_batch_threads); 0 = one per CPU core
    # Told of each model call: (pairs in it, seconds each of its chunks queued); serving/metrics.py counts them.
    observer: Optional[Callable[[int, Sequence[float]], None]] = field(default=None, compare=False, repr=False)


def bucket(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds ``length``; past the last one, the next multiple of the last."""
    i = bisect.bisect_left(buckets, length)
    if i < len(buckets):
        return buckets[i]
    return -(-length // buckets[-1]) * buckets[-1]


def allowed_batch_size(size: int, max_batch_size: int) -> int:
    """The next power of two, or ``max_batch_size`` itself: the batch sizes a model call may have."""
    return min(1 << max(0, size - 1).bit_length(), max(max_batch_size, size))


def allowed_batch_sizes(max_batch_size: int) -> List[int]:
    """Every batch size a model call may have: the powers of two below ``max_batch_size``, and it."""
    sizes, size = [], 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    return sizes + [max_batch_size]


def filled_batch_size(size: int, max_batch_size: int) -> int:
    """The largest allowed batch size that ``size`` pairs fill without padding rows (at least 1)."""
    if size >= max_batch_size:
        return max_batch_size
    return 1 << (max(size, 1).bit_length() - 1)


def length_key(arrays: Arrays) -> Tuple[int, int]:
    """(Lq bucket, Lr bucket) of a request: chunks with one key can share a model call."""
    return (bucket(arrays[sig.QUERY].shape[1], sig.QUERY_BUCKETS),
            bucket(arrays[sig.REFERENCE].shape[1], sig.REFERENCE_BUCKETS))


def pairs_per_call(key: Tuple[int, int], options: BatchingOptions) -> int:
    """The most pairs of this length bucket one model call may take."""
    return max(1, min(options.max_batch_size, options.max_batch_steps // key[1]))


def split(arrays: Arrays, per_call: int) -> List[Arrays]:
    """A request -> chunks of at most ``per_call`` pairs (views, no copy)."""
    batch = len(arrays[sig.QUERY_LENGTH])
    return [{name: value[i:i + per_call] for name, value in arrays.items()} for i in range(0, batch, per_call)]


def stack(chunks: Sequence[Arrays], shape: Optional[Tuple[int, int, int]]) -> Arrays:
    """Chunks -> one zero-padded batch of ``shape`` (batch, Lq, Lr), or of the chunks' largest shape (None)."""
    size = sum(len(c[sig.QUERY_LENGTH]) for c in chunks)
    if shape is None:
        shape = (size, max(c[sig.QUERY].shape[1] for c in chunks), max(c[sig.REFERENCE].shape[1] for c in chunks))
    if len(chunks) == 1 and (size,) + chunks[0][sig.QUERY].shape[1:2] + chunks[0][sig.REFERENCE].shape[1:2] == shape:
        return chunks[0]  # already the call's shape: nothing to copy
    batch, lq, lr = shape
    dim = chunks[0][sig.QUERY].shape[2]
    out = {sig.QUERY: np.zeros((batch, lq, dim), np.float32), sig.QUERY_LENGTH: np.ones((batch,), np.int32),
           sig.REFERENCE: np.zeros((batch, lr, dim), np.float32), sig.REFERENCE_LENGTH: np.ones((batch,), np.int32)}
    row = 0
    for c in chunks:
        n = len(c[sig.QUERY_LENGTH])
        out[sig.QUERY][row:row + n, :c[sig.QUERY].shape[1]] = c[sig.QUERY]
        out[sig.REFERENCE][row:row + n, :c[sig.REFERENCE].shape[1]] = c[sig.REFERENCE]
        out[sig.QUERY_LENGTH][row:row + n] = c[sig.QUERY_LENGTH]
        out[sig.REFERENCE_LENGTH][row:row + n] = c[sig.REFERENCE_LENGTH]
        row += n
    return out


def unstack(outputs: Arrays, chunks: Sequence[Arrays]) -> List[Arrays]:
    """A batch's outputs -> each chunk's rows, probabilities cut back to the chunk's own reference steps."""
    parts, row = [], 0
    for c in chunks:
        n, lr = len(c[sig.QUERY_LENGTH]), c[sig.REFERENCE].shape[1]
        parts.append({name: (value[row:row + n, :lr] if name == sig.PROBABILITIES else value[row:row + n])
                      for name, value in outputs.items()})
        row += n
    return parts


def concat(parts: Sequence[Arrays]) -> Arrays:
    return parts[0] if len(parts) == 1 else {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


class _Task:
    """One chunk waiting for the batch thread."""

    __slots__ = ("arrays", "key", "size", "is_active", "deadline", "done", "outputs", "error", "queued_at", "due")

    def __init__(self, arrays: Arrays, key: Tuple[int, int], is_active: Callable[[], bool],
                 deadline: Optional[float] = None):
        self.arrays, self.key, self.is_active, self.deadline = arrays, key, is_active, deadline
        self.size = len(arrays[sig.QUERY_LENGTH])
        self.done = threading.Event()
        self.outputs: Optional[Arrays] = None
        self.error: Optional[BaseException] = None
        self.queued_at = time.monotonic()
        self.due = False  # part of a due batch that another thread took its share of: run it without waiting


class Executor:
    """Runs requests on one signature: chunked, padded to buckets, batched across requests when enabled.

    ``call(arrays) -> outputs`` runs the signature on one padded batch (NumPy in
    and out). ``pad_to_buckets``: pad every call to the bucket shapes (for XLA);
    otherwise a call is padded only to its largest chunk.
    """

    def __init__(self, call: Callable[[Arrays], Arrays], options: BatchingOptions = BatchingOptions(enabled=False),
                 pad_to_buckets: bool = True, name: str = "vreloc"):
        self.call, self.options, self.pad_to_buckets = call, options, pad_to_buckets
        self._queue: deque = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._free = 0  # batch threads waiting for work
        self._threads: List[threading.Thread] = []
        self.compiled: set = set()  # (batch, Lq, Lr) shapes called at least once: compiled, with XLA
        self.compile_seconds = 0.0  # the longest first call seen: what compiling a new shape is expected to take
        if options.enabled:
            for i in range(options.num_batch_threads or os.cpu_count() or 1):
                thread = threading.Thread(target=self._loop, name=f"{name}-batching-{i}", daemon=True)
                thread.start()
                self._threads.append(thread)

    # -- one request -------------------------------------------------------------
    def run(self, arrays: Arrays, is_active: Callable[[], bool] = lambda: True,
            deadline: Optional[float] = None) -> Arrays:
        """The outputs of a validated request; :class:`Abandoned` once ``is_active()`` turns False.

        ``deadline`` (``time.monotonic()`` seconds, None: none): a call needing a shape not
        compiled yet is not started when the compile would outlast it (:class:`WouldMissDeadline`).
        """
        key = length_key(arrays)
        chunks = split(arrays, pairs_per_call(key, self.options))
        if not self._threads:
            parts = []
            for chunk in chunks:
                if not is_active():
                    raise Abandoned()
                self._check_compile_time([chunk], key, [deadline])
                parts.append(self._run_batch([chunk], key, [0.0])[0])
            return concat(parts)
        tasks = [_Task(chunk, key, is_active, deadline) for chunk in chunks]
        with self._cond:
            if self._closed:
                raise Abandoned()
            self._queue.extend(tasks)
            self._cond.notify()
        for task in tasks:
            while not task.done.wait(0.05):
                if not is_active():
                    raise Abandoned()  # the batch thread skips the tasks left in the queue
            if task.error is not None:
                raise task.error
        return concat([t.outputs for t in tasks])

    def _call_shape(self, chunks: Sequence[Arrays], key: Tuple[int, int]) -> Optional[Tuple[int, int, int]]:
        size = sum(len(c[sig.QUERY_LENGTH]) for c in chunks)
        return (allowed_batch_size(size, self.options.max_batch_size),) + key if self.pad_to_buckets else None

    def _check_compile_time(self, chunks: Sequence[Arrays], key: Tuple[int, int],
                            deadlines: Sequence[Optional[float]]) -> None:
        """WouldMissDeadline when the call's shape is not compiled and the compile would outlast a deadline."""
        shape = self._call_shape(chunks, key)
        if shape is None or shape in self.compiled:
            return
        left = min((d for d in deadlines if d is not None), default=None)
        expected = self.expected_compile_seconds()
        if left is not None and left - time.monotonic() < expected:
            raise WouldMissDeadline(
                f"the request needs a model call of a shape not compiled yet (batch, Lq, Lr) = {shape}; compiling "
                f"takes about {expected:.1f} s, more than the {max(0.0, left - time.monotonic()):.1f} s "
                f"its deadline leaves: not started")

    def expected_compile_seconds(self) -> float:
        """What compiling a new shape is expected to take: the longest first call seen, at least
        ``signature.MIN_COMPILE_SECONDS`` (a warm-up served from the XLA cache measures a load, not a compile)."""
        return max(self.compile_seconds, sig.MIN_COMPILE_SECONDS)

    def _run_batch(self, chunks: Sequence[Arrays], key: Tuple[int, int],
                   queue_seconds: Optional[Sequence[float]] = None) -> List[Arrays]:
        """Run chunks as one model call; ``queue_seconds`` (None: warm-up, not counted) go to the observer."""
        shape = self._call_shape(chunks, key)
        first = shape is not None and shape not in self.compiled
        started = time.monotonic()
        outputs = self.call(stack(chunks, shape))
        if first:
            self.compiled.add(shape)
            self.compile_seconds = max(self.compile_seconds, time.monotonic() - started)
        if queue_seconds is not None and self.options.observer is not None:
            self.options.observer(sum(len(c[sig.QUERY_LENGTH]) for c in chunks), queue_seconds)
        return unstack(outputs, chunks)

    def compile(self, arrays: Arrays) -> bool:
        """Call the model once at the shape ``arrays`` are padded to (warm-up); False when it was compiled already."""
        key = length_key(arrays)
        if self._call_shape([arrays], key) in self.compiled:
            return False
        self._run_batch([arrays], key)
        return True

    # -- the batch thread ----------------------------------------------------------
    def _take_batch(self) -> List[_Task]:
        """Wait for a batch to be due, then take it or this thread's share of it (FIFO).

        A batch is due when the queued tasks of the first task's bucket fill a call, or
        ``batch_timeout_micros`` after the first task was queued (TF Serving's rule).
        A due batch is shared out between the batch threads that are free, so that one
        call does not take every waiting request while another thread (core) idles;
        with padding to allowed batch sizes a call takes what fills one (a padded row
        costs as much as a real one). What is left is marked due and goes to the next
        free thread at once. The first task always goes, so no task waits forever.
        Empty only once closed.
        """
        with self._cond:
            self._free += 1
            try:
                while True:
                    while not self._queue and not self._closed:
                        self._cond.wait()
                    if self._closed:
                        return []
                    self._drop_abandoned()
                    if not self._queue:
                        continue
                    first = self._queue[0]
                    limit = pairs_per_call(first.key, self.options)
                    due, size = self._fitting(first.key, limit)
                    left = first.queued_at + self.options.batch_timeout_micros / 1e6 - time.monotonic()
                    if size >= limit or left <= 0 or first.due:
                        break
                    self._cond.wait(left)
                share = -(-size // self._free)
                if self.pad_to_buckets:
                    share = filled_batch_size(share, self.options.max_batch_size)
                batch = due if share >= size else (self._fitting(first.key, share)[0] or [first])
                for task in batch:
                    self._queue.remove(task)
                if len(batch) < len(due):
                    for task in due:
                        task.due = True
                    self._cond.notify()  # a free thread takes the rest now
                return batch
            finally:
                self._free -= 1

    def _drop_abandoned(self) -> None:
        """Queued tasks whose client gave up leave the queue now, so they take no place in a batch."""
        for task in [t for t in self._queue if not t.is_active()]:
            self._queue.remove(task)
            task.error = Abandoned()
            task.done.set()

    def _fitting(self, key: Tuple[int, int], limit: int) -> Tuple[List[_Task], int]:
        """The queued tasks of ``key`` that fit ``limit`` pairs (FIFO), and their pairs."""
        batch, size = [], 0
        for task in self._queue:
            if task.key == key and size + task.size <= limit:
                batch.append(task)
                size += task.size
        return batch, size

    def _loop(self) -> None:
        while True:
            batch = self._take_batch()
            if not batch:
                return
            live = []
            for task in batch:
                if task.is_active():
                    live.append(task)
                else:
                    task.error = Abandoned()
                    task.done.set()
            if not live:
                continue
            try:
                self._check_compile_time([t.arrays for t in live], live[0].key, [t.deadline for t in live])
            except WouldMissDeadline as exc:
                for task in live:
                    task.error = exc
                    task.done.set()
                continue
            try:
                now = time.monotonic()
                for task, outputs in zip(live, self._run_batch([t.arrays for t in live], live[0].key,
                                                               [now - t.queued_at for t in live])):
                    task.outputs = outputs
            except BaseException as exc:  # noqa: BLE001 - every waiting request gets the error
                for task in live:
                    task.error = exc
            for task in live:
                task.done.set()

    def close(self) -> None:
        """Stop the batch threads; requests still queued are abandoned."""
        with self._cond:
            self._closed = True
            left, self._queue = list(self._queue), deque()
            self._cond.notify_all()
        for task in left:
            task.error = Abandoned()
            task.done.set()
