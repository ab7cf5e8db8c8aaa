"""Deadlines all the way (issue #25, row 10): no compile is started that would outlast the client's deadline,
and warm-up compiles every batch size a model call may have, so no request pays a compile."""
import os
import threading
import time

import grpc
import numpy as np
import psutil
import pytest

from helpers import runs as H
from serving import signature as sig
from serving.batching import BatchingOptions, Executor, WouldMissDeadline, allowed_batch_sizes
from serving.validation import RequestLimits


class _FakeXla:
    """A model call whose first call per shape 'compiles' (sleeps); every shape it was called with."""

    def __init__(self, compile_seconds=0.3):
        self.compile_seconds, self.shapes, self.lock = compile_seconds, [], threading.Lock()

    def __call__(self, arrays):
        shape = (arrays[sig.QUERY].shape[0], arrays[sig.QUERY].shape[1], arrays[sig.REFERENCE].shape[1])
        with self.lock:
            first = shape not in self.shapes
            self.shapes.append(shape)
        if first:
            time.sleep(self.compile_seconds)
        batch = shape[0]
        return {sig.PROBABILITIES: np.zeros((batch, shape[2], 4), np.float32),
                sig.START: np.zeros(batch, np.int32), sig.END: np.ones(batch, np.int32),
                sig.SCORE: np.zeros(batch, np.float32)}


def _arrays(batch=1, lq=10, lr=40):
    rng = np.random.default_rng(0)
    return {sig.QUERY: rng.standard_normal((batch, lq, 8)).astype(np.float32),
            sig.QUERY_LENGTH: np.full(batch, lq, np.int32),
            sig.REFERENCE: rng.standard_normal((batch, lr, 8)).astype(np.float32),
            sig.REFERENCE_LENGTH: np.full(batch, lr, np.int32)}


def test_allowed_batch_sizes():
    assert allowed_batch_sizes(16) == [1, 2, 4, 8, 16]
    assert allowed_batch_sizes(12) == [1, 2, 4, 8, 12]
    assert allowed_batch_sizes(1) == [1]


@pytest.mark.parametrize("batching", [False, True])
def test_a_compile_that_would_outlast_the_deadline_is_not_started(batching):
    call = _FakeXla()
    executor = Executor(call, BatchingOptions(enabled=batching, max_batch_size=4, num_batch_threads=1),
                        pad_to_buckets=True)
    try:
        assert executor.compile(_arrays(lr=40)) and not executor.compile(_arrays(lr=40))  # warm-up: one compile
        calls = len(call.shapes)
        started = time.monotonic()
        with pytest.raises(WouldMissDeadline, match=r"not compiled yet .* \(1, 16, 768\)"):
            executor.run(_arrays(lr=700), deadline=time.monotonic() + 1.0)  # a new Lr bucket, 1 s left
        assert time.monotonic() - started < 0.2
        assert len(call.shapes) == calls and (1, 16, 768) not in executor.compiled  # nothing was run for it
        out = executor.run(_arrays(lr=40), deadline=time.monotonic() + 1.0)  # a compiled shape runs at once
        assert out[sig.PROBABILITIES].shape == (1, 40, 4)
        out = executor.run(_arrays(lr=700), deadline=time.monotonic() + 60)  # time enough: compiled and run
        assert out[sig.PROBABILITIES].shape == (1, 700, 4) and (1, 16, 768) in executor.compiled
        assert executor.run(_arrays(lr=700))[sig.PROBABILITIES].shape == (1, 700, 4)  # no deadline: runs
    finally:
        executor.close()


def test_warm_up_compiles_every_allowed_batch_size_so_no_request_compiles(tmp_path):
    from serving.model_servable import LoadedVersion

    base = H.export_copy(str(tmp_path), seed=0)  # XLA
    version = LoadedVersion(H.MODEL_NAME, 1, os.path.join(base, "1"), BatchingOptions(enabled=False, max_batch_size=4))
    try:
        assert version.xla and version.warm_up() == 2
        keys = {shape[1:] for shape in version.executor.compiled}
        assert version.executor.compiled == {(b,) + key for b in (1, 2, 4) for key in keys}
        compiled = set(version.executor.compiled)
        rng = np.random.default_rng(3)
        for batch in (1, 2, 3, 4):  # batch 2 and 3 are in no warm-up request; 3 is padded to 4
            arrays = H.random_batch(rng, lq=(20,) * batch, lr=(250,) * batch, pad_q=0, pad_r=0)
            version.run(sig.SIGNATURE_NAME, arrays, deadline=time.monotonic() + 0.5)  # never refused: compiled
        assert version.executor.compiled == compiled
    finally:
        version.close()


def test_a_served_request_needing_a_new_compile_with_a_short_deadline_costs_the_server_nothing(tmp_path):
    """Row 10: a request needing a new compiled shape with a 1 s deadline: the client left at 1.1 s and the server
    compiled on for 8 s. Now it is answered DEADLINE_EXCEEDED at once and nothing is compiled for it."""
    from serving.client import make_request
    from serving.server import start_server
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    base = H.export_copy(str(tmp_path), seed=0)  # XLA
    handle = start_server(base, port=0, poll_interval=0, batching=BatchingOptions(max_batch_size=2),
                          limits=RequestLimits(max_query_length=64, max_reference_length=2048, max_batch_size=2))
    me = psutil.Process()
    try:
        executor = handle.models[H.MODEL_NAME].versions_loaded()[0].executor
        compiled = set(executor.compiled)
        rng = np.random.default_rng(5)
        request = make_request(rng.standard_normal((1, 16, H.FEATURE_DIM)).astype(np.float32),
                               rng.standard_normal((1, 2000, H.FEATURE_DIM)).astype(np.float32), H.MODEL_NAME)
        with grpc.insecure_channel(f"127.0.0.1:{handle.port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            cpu = sum(me.cpu_times()[:2])
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(request, timeout=1.0)
            seconds = time.monotonic() - started
            time.sleep(1.5)
            spent = sum(me.cpu_times()[:2]) - cpu
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "not started" in info.value.details() and seconds < 0.5, (info.value.details(), seconds)
        assert executor.compiled == compiled and spent < 0.5, spent
    finally:
        handle.stop(grace=1)
