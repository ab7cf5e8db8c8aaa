"""serving.batching with a NumPy stand-in for the model: buckets, chunks, padding, merging, abandoned work."""
import threading
import time

import numpy as np
import pytest

from serving import signature as sig
from serving.batching import (Abandoned, BatchingOptions, Executor, allowed_batch_size, bucket, filled_batch_size,
                              length_key, pairs_per_call, split, stack, unstack)

D = 3


def request(batch, lq, lr, seed=0):
    rng = np.random.default_rng(seed)
    return {sig.QUERY: rng.standard_normal((batch, lq, D)).astype(np.float32),
            sig.QUERY_LENGTH: rng.integers(1, lq + 1, batch).astype(np.int32),
            sig.REFERENCE: rng.standard_normal((batch, lr, D)).astype(np.float32),
            sig.REFERENCE_LENGTH: rng.integers(1, lr + 1, batch).astype(np.int32)}


def fake_model(arrays):
    """Per row: outputs that depend only on the row's valid steps (as the real model's do)."""
    q, ql, r, rl = (arrays[n] for n in sig.INPUT_NAMES)
    steps = np.arange(r.shape[1])[None, :, None]
    valid = steps < rl[:, None, None]
    qmean = np.stack([q[i, :ql[i]].mean(0) for i in range(len(ql))])
    probabilities = np.where(valid, np.tanh(r * qmean[:, None, :])[..., :1].repeat(4, -1), 0).astype(np.float32)
    score = np.array([probabilities[i, :rl[i]].sum() for i in range(len(rl))], np.float32)
    return {sig.PROBABILITIES: probabilities, sig.START: (rl // 3).astype(np.int32), sig.END: rl.astype(np.int32),
            sig.SCORE: score}


def gated_model():
    """(model, calls, gate): the fake model, held until ``gate`` is set, recording each call's batch size."""
    calls, gate = [], threading.Event()

    def model(arrays):
        gate.wait(10)
        calls.append(len(arrays[sig.QUERY_LENGTH]))
        return fake_model(arrays)

    return model, calls, gate


def test_buckets_and_batch_sizes():
    assert [bucket(n, sig.REFERENCE_BUCKETS) for n in (1, 64, 65, 299, 300, 301, 4096, 4097)] == \
        [64, 64, 128, 300, 300, 384, 4096, 8192]
    assert [bucket(n, sig.QUERY_BUCKETS) for n in (1, 8, 9, 16, 17, 512)] == [8, 8, 16, 16, 32, 512]
    assert [allowed_batch_size(n, 16) for n in (1, 2, 3, 5, 8, 9, 16)] == [1, 2, 4, 8, 8, 16, 16]
    assert [allowed_batch_size(n, 12) for n in (3, 9, 12)] == [4, 12, 12]
    opts = BatchingOptions(max_batch_size=16, max_batch_steps=4800)
    assert pairs_per_call((16, 300), opts) == 16 and pairs_per_call((16, 1024), opts) == 4
    assert pairs_per_call((16, 8192), opts) == 1
    assert BatchingOptions().enabled is True  # on by default: it measured faster with and without XLA
    assert [filled_batch_size(n, 16) for n in (1, 2, 3, 5, 7, 8, 15, 16, 40)] == [1, 2, 2, 4, 4, 8, 8, 16, 16]


def test_padding_and_splitting_give_each_row_its_own_answer():
    parts = [request(3, 5, 40, 1), request(2, 9, 61, 2)]
    key = (16, 64)
    assert length_key(parts[0]) == (8, 64) and length_key(parts[1]) == (16, 64)
    batch = stack(parts, (8,) + key)
    assert batch[sig.QUERY].shape == (8, 16, D) and batch[sig.REFERENCE].shape == (8, 64, D)
    assert batch[sig.QUERY_LENGTH][5:].tolist() == [1, 1, 1]  # padded rows are valid length-1 rows
    for part, out in zip(parts, unstack(fake_model(batch), parts)):
        want = fake_model(part)
        assert out[sig.PROBABILITIES].shape == want[sig.PROBABILITIES].shape
        for name in sig.OUTPUT_NAMES:
            np.testing.assert_allclose(out[name], want[name], rtol=1e-6, err_msg=name)
    chunks = split(request(7, 4, 20), 3)
    assert [len(c[sig.QUERY_LENGTH]) for c in chunks] == [3, 3, 1]
    assert stack(chunks[:1], (3, 4, 20)) is chunks[0]  # already the call's shape: no copy


@pytest.mark.parametrize("enabled", [False, True])
def test_executor_answers_like_the_model_and_chunks_large_requests(enabled):
    calls = []

    def model(arrays):
        calls.append(arrays[sig.QUERY].shape[:1] + arrays[sig.REFERENCE].shape[1:2])
        return fake_model(arrays)

    executor = Executor(model, BatchingOptions(enabled=enabled, max_batch_size=4, max_batch_steps=4 * 128))
    try:
        big = request(9, 6, 100, 3)
        out = executor.run(big)
        want = fake_model(big)
        for name in sig.OUTPUT_NAMES:
            np.testing.assert_allclose(out[name], want[name], rtol=1e-6, err_msg=name)
        assert sorted(calls) == [(1, 128), (4, 128), (4, 128)]  # 9 pairs in chunks of 4, padded to the Lr bucket
    finally:
        executor.close()


def test_concurrent_requests_share_calls_and_abandoned_ones_are_skipped():
    model, calls, gate = gated_model()

    executor = Executor(model, BatchingOptions(enabled=True, max_batch_size=8, num_batch_threads=1))
    results, errors = {}, {}

    def client(i, alive):
        try:
            results[i] = executor.run(request(1, 5, 50, 10 + i), alive)
        except Abandoned:
            errors[i] = "abandoned"

    try:
        first = threading.Thread(target=client, args=(0, lambda: True))
        first.start()
        time.sleep(0.2)  # the first request occupies the batch thread (the gate holds it) ...
        cancelled = threading.Event()
        threads = [threading.Thread(target=client, args=(i, (lambda: not cancelled.is_set()) if i == 5 else
                                                         (lambda: True))) for i in range(1, 6)]
        for t in threads:
            t.start()
        time.sleep(0.2)  # ... while five more queue up; one of them gives up
        cancelled.set()
        time.sleep(0.1)
        gate.set()
        for t in [first] + threads:
            t.join(10)
        assert calls == [1, 4]  # the four still waiting went in one call; the abandoned one was not run
        assert errors == {5: "abandoned"} and sorted(results) == [0, 1, 2, 3, 4]
        for i, out in results.items():
            np.testing.assert_allclose(out[sig.SCORE], fake_model(request(1, 5, 50, 10 + i))[sig.SCORE], rtol=1e-6)
    finally:
        gate.set()
        executor.close()
    with pytest.raises(Abandoned):
        executor.run(request(1, 5, 50))


def test_batch_threads_survive_a_race_for_the_same_requests():
    """Two batch threads waiting out a timeout for one queue: the one that finds its tasks taken waits again.

    (It used to return an empty batch, which ended its thread for good: a server with
    ``--batch-timeout-micros`` > 0 then ran one model call at a time.)
    """
    executor = Executor(fake_model, BatchingOptions(enabled=True, max_batch_size=8, batch_timeout_micros=20_000,
                                                    num_batch_threads=2))
    try:
        for round_ in range(15):
            outs = {}
            threads = [threading.Thread(target=lambda i=i: outs.setdefault(i, executor.run(request(1, 5, 50, i))))
                       for i in range(3)]
            for t in threads:
                t.start()
                time.sleep(0.005)  # arrivals spread over the timeout: both threads see the first request
            for t in threads:
                t.join(10)
            assert sorted(outs) == [0, 1, 2], f"round {round_}: requests lost"
            assert all(t.is_alive() for t in executor._threads), f"round {round_}: a batch thread ended"
    finally:
        executor.close()
    for t in executor._threads:
        t.join(5)
    assert not any(t.is_alive() for t in executor._threads), "close() ends the batch threads"


def _run_together(executor, n, spacing=0.0):
    """``n`` one-pair requests from ``n`` threads; their scores checked against the model's."""
    outs = {}
    threads = [threading.Thread(target=lambda i=i: outs.setdefault(i, executor.run(request(1, 5, 50, 20 + i))))
               for i in range(n)]
    for t in threads:
        t.start()
        time.sleep(spacing)
    for t in threads:
        t.join(10)
    assert sorted(outs) == list(range(n))
    for i, out in outs.items():
        np.testing.assert_allclose(out[sig.SCORE], fake_model(request(1, 5, 50, 20 + i))[sig.SCORE], rtol=1e-6)


def test_a_call_takes_what_fills_an_allowed_batch_size_and_free_threads_share_the_queue():
    model, calls, gate = gated_model()

    # one batch thread, held by a first request while five queue: 4 fill a call of 4, the fifth goes next
    # (five in one call would be padded to 8 rows, three of them computed for nothing)
    executor = Executor(model, BatchingOptions(enabled=True, max_batch_size=8, num_batch_threads=1))
    try:
        first = threading.Thread(target=_run_together, args=(executor, 1))
        first.start()
        time.sleep(0.2)
        rest = threading.Thread(target=_run_together, args=(executor, 5))
        rest.start()
        time.sleep(0.3)
        gate.set()
        first.join(10)
        rest.join(10)
        assert calls == [1, 4, 1]
    finally:
        executor.close()

    # two free batch threads and eight requests within the timeout: four each, not eight in one call
    # while the other thread idles (a call takes 0.1 s, so the first thread is busy when the second takes
    # the rest)
    calls.clear()

    def slow_model(arrays):
        time.sleep(0.1)
        return model(arrays)

    executor = Executor(slow_model, BatchingOptions(enabled=True, max_batch_size=8, batch_timeout_micros=2_000_000,
                                               num_batch_threads=2))
    try:
        _run_together(executor, 8, spacing=0.002)
        assert sorted(calls) == [4, 4]
    finally:
        executor.close()
