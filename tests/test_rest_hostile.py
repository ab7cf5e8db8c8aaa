"""The REST port against hostile clients (issue #25 point 3, the probe's rows 6-9): as hard to knock over as gRPC.

Each test drives a real server in this process with a real HTTP client (raw sockets
where a client must stall) and asserts what a client sees -- a 4xx naming what was
wrong, quickly -- and what the server pays: no traceback logged, bounded memory
(RSS of this process, which is the server's) and bounded threads.

| row | hostile request                                                      | before                     |
|-----|----------------------------------------------------------------------|----------------------------|
| 6   | JSON nested 1,000-10^6 deep; ``signature_name: 123``; version > int64 | 500 and a logged traceback |
| 7   | ``query_length`` 2**32 + 3                                           | wrapped to 3, 200          |
| 8   | 13.5 MB bodies of empty objects, eight at once                        | +360 MB each               |
| 9   | 300 connections that never finish their body                         | 300 threads held forever   |
"""
import http.client
import json
import logging
import selectors
import socket
import ssl
import threading
import time

import numpy as np
import psutil
import pytest

from helpers import runs as H
from serving.server import check_tls_files, start_server
from serving.validation import RequestLimits

# Lr up to 8192: a legal body may be 25.6 MB, so a 13.5 MB body is not refused by its size alone.
LIMITS = RequestLimits(max_reference_length=8192)
TIMEOUT = 2.0  # --rest-timeout of the module's server
PREDICT = f"/v1/models/{H.MODEL_NAME}:predict"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = H.export_copy(str(tmp_path_factory.mktemp("rest-hostile")), seed=0, xla=False)
    handle = start_server(base, port=0, rest_port=0, poll_interval=0, limits=LIMITS, rest_timeout=TIMEOUT)
    yield handle
    handle.stop(grace=1)


@pytest.fixture
def no_tracebacks(caplog):
    """Fails the test if the server logged an ERROR (a traceback) while it ran: client faults are not our bugs."""
    caplog.set_level(logging.WARNING)
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def call(port, method, path, body=None, headers=None, timeout=30.0, context=None):
    """(status, parsed JSON answer) over a fresh connection."""
    if context is None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    else:
        connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        payload = response.read()
        try:
            return response.status, json.loads(payload)
        except ValueError:
            return response.status, payload
    finally:
        connection.close()


def _inputs(lq=6, lr=50, **override):
    rng = np.random.default_rng(0)
    inputs = {"query": rng.standard_normal((1, lq, H.FEATURE_DIM)).tolist(), "query_length": [lq],
              "reference": rng.standard_normal((1, lr, H.FEATURE_DIM)).tolist(), "reference_length": [lr]}
    inputs.update(override)
    return inputs


def _post(handle, body, **kwargs):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return call(handle.rest_port, "POST", PREDICT, data, **kwargs)


# -- row 6 ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [1_000, 100_000, 1_000_000])
def test_deep_nesting_is_refused_before_parsing(served, no_tracebacks, depth):
    """Row 6: json.loads would recurse into RecursionError (a 500 with a traceback); the scan refuses it first."""
    nested = b'{"inputs": {"query": ' + b"[" * depth + b"]" * depth + b"}}"
    started = time.perf_counter()
    status, answer = _post(served, nested)
    took = time.perf_counter() - started
    assert status == 400, answer
    assert "levels deep" in answer["error"] and "at most 6" in answer["error"], answer
    assert took < 2.0, took
    status, answer = _post(served, b"[" * depth)  # never closed
    assert status == 400 and "levels deep" in answer["error"], answer


def test_signature_name_that_is_not_a_string(served, no_tracebacks):
    """Row 6: a number as signature_name was a TypeError inside the server (500)."""
    for bad in (123, ["serving_default"], {"a": 1}, None, True):
        status, answer = _post(served, {"signature_name": bad, "inputs": _inputs()})
        assert status == 400, (bad, answer)
        assert "'signature_name' must be a string" in answer["error"], answer


def test_url_version_above_int64(served, no_tracebacks):
    """Row 6: a version beyond int64 overflowed the proto field (500); TF Serving answers 400, as here."""
    huge = str(2**63)
    for method, path, body in (("GET", f"/v1/models/{H.MODEL_NAME}/versions/{huge}", None),
                               ("GET", f"/v1/models/{H.MODEL_NAME}/versions/{huge}/metadata", None),
                               ("POST", f"/v1/models/{H.MODEL_NAME}/versions/{'9' * 40}:predict",
                                json.dumps({"inputs": _inputs()}).encode())):
        status, answer = call(served.rest_port, method, path, body)
        assert status == 400, (path, answer)
        assert "Failed to convert version" in answer["error"], answer
    status, answer = call(served.rest_port, "GET", f"/v1/models/{H.MODEL_NAME}/versions/{2**63 - 1}")
    assert status == 404, answer  # fits int64: simply not served


# -- row 7 ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, words", [
    (2**32 + 3, ["4294967299", "outside the range of int32"]),
    (2**31, ["2147483648", "outside the range of int32"]),
    (-(2**31) - 1, ["outside the range of int32"]),
    (2**64 + 3, ["outside the range of int32"]),  # beyond uint64: NumPy makes an object array
    (10**30, ["outside the range of int32"]),
    (True, ["booleans are not numbers"]),
    (6.0, ["expected integers"]),
    ("6", ["strings"]),
    (None, ["not a rectangular array of numbers"]),
])
def test_lengths_are_range_checked_not_wrapped(served, no_tracebacks, value, words):
    """Row 7: 2**32 + 3 was cast to int32 as 3 and answered 200; now every integer must fit the dtype."""
    for body in ({"inputs": _inputs(query_length=[value])},
                 {"instances": [{"query": _inputs()["query"][0], "query_length": value,
                                 "reference": _inputs()["reference"][0], "reference_length": 50}]}):
        status, answer = _post(served, body)
        assert status == 400, (value, answer)
        assert "'query_length" in answer["error"], answer
        for word in words:
            assert word in answer["error"], (word, answer)
    status, answer = _post(served, {"inputs": _inputs(query_length=[6])})  # the same request, legal
    assert status == 200, answer


# -- row 8 ----------------------------------------------------------------------------------------------
def test_bodies_of_empty_objects_cost_no_memory(served, no_tracebacks):
    """Row 8: a 13.5 MB body of empty objects parsed into 4.5 million dicts (+360 MB); eight at once, +2.6 GB.

    Now the scan refuses each before json.loads runs and the body budget bounds how
    many are held at once: the server's RSS may grow at most 100 MB and each client
    gets its 400 quickly.
    """
    body = b'{"inputs": {"query": [' + b"{}," * 4_500_000 + b"{}]}}"
    assert len(body) > 13_500_000
    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = [baseline]
    sampling = threading.Event()

    def sample():
        while not sampling.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.005)

    answers, times = [None] * 8, [None] * 8

    def client(i):
        started = time.perf_counter()
        answers[i] = _post(served, body, timeout=60)
        times[i] = time.perf_counter() - started

    sampler = threading.Thread(target=sample)
    sampler.start()
    clients = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    started = time.perf_counter()
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(60)
    wall = time.perf_counter() - started
    sampling.set()
    sampler.join()
    growth_mb = (peak[0] - baseline) / 2**20
    print(f"eight 13.5 MB bodies of empty objects: {wall:.2f} s wall, slowest {max(times):.2f} s, "
          f"server RSS +{growth_mb:.0f} MB at peak")
    for status, answer in answers:
        assert status == 400, answer
        assert "objects" in answer["error"] and "a legal request holds at most" in answer["error"], answer
    assert max(times) < 10, times
    assert growth_mb < 100, growth_mb


def test_a_body_that_cannot_get_budget_is_answered_503(served, no_tracebacks):
    """Bodies read at once share a byte budget: one that finds no room before its deadline gets a clear 503."""
    from serving.rest import RestServer

    rest = RestServer(served.models, "127.0.0.1", 0, timeout=1.0, body_budget_bytes=1_000_000)
    try:
        # 900,000 bytes held by bodies in flight (a stalled client's would be freed at its own earlier deadline)
        rest.api.budget.acquire(900_000, time.monotonic() + 10)
        started = time.perf_counter()
        status, answer = call(rest.port, "POST", PREDICT, b" " * 200_000)
        assert status == 503, answer
        assert "body budget" in answer["error"] and "retry later" in answer["error"], answer
        assert 0.9 < time.perf_counter() - started < 3
        rest.api.budget.release(900_000)
        assert _post_to(rest.port, {"inputs": _inputs()})[0] == 200  # the budget came back
        status, answer = call(rest.port, "POST", PREDICT, b" " * 1_000_001)
        assert status == 413 and "body budget" in answer["error"], answer
    finally:
        rest.stop_accepting()


def _post_to(port, body):
    return call(port, "POST", PREDICT, json.dumps(body).encode())


# -- row 9 ----------------------------------------------------------------------------------------------
def _wait_closed(sockets, limit):
    """{socket: bytes the server sent before closing it} for those closed within ``limit`` seconds."""
    selector = selectors.DefaultSelector()
    received = {}
    for sock in sockets:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        received[sock] = b""
    closed = {}
    end = time.monotonic() + limit
    while len(closed) < len(sockets) and time.monotonic() < end:
        for key, _ in selector.select(timeout=0.1):
            try:
                data = key.fileobj.recv(65536)
            except ConnectionResetError:
                data = b""
            if data:
                received[key.fileobj] += data
            else:
                closed[key.fileobj] = received[key.fileobj]
                selector.unregister(key.fileobj)
    selector.close()
    return closed


def test_stalled_clients_are_dropped_and_threads_bounded(served, no_tracebacks):
    """Row 9: 300 connections that never finish their body held 300 threads forever.

    Now at most 64 connections hold a thread; the rest are answered 503 at once; each
    stalled one is answered 408 and closed after --rest-timeout, and its thread ends.
    """
    baseline = threading.active_count()
    head = f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{{\"inputs\": ".encode()
    sockets, peak = [], baseline
    started = time.monotonic()
    for _ in range(300):
        sock = socket.create_connection(("127.0.0.1", served.rest_port))
        sock.sendall(head)
        sockets.append(sock)
        peak = max(peak, threading.active_count())
    opening = time.monotonic() - started  # seconds to open all 300 (long on a loaded machine)
    closed = _wait_closed(sockets, TIMEOUT + 6)
    took = time.monotonic() - started
    time.sleep(0.3)
    after = threading.active_count()
    statuses = [data.split(b" ", 2)[1] if data.startswith(b"HTTP/1.1 ") else data[:20] for data in closed.values()]
    counts = {s: statuses.count(s) for s in set(statuses)}
    print(f"300 stalled connections: all closed in {took:.2f} s; answers {counts}; threads {baseline} -> peak "
          f"{peak} -> {after}")
    for sock in sockets:
        sock.close()
    assert len(closed) == 300, f"{300 - len(closed)} connection(s) still held after {TIMEOUT + 6:g} s"
    assert set(counts) <= {b"408", b"503"}, counts
    # a slot frees only when its stalled client is dropped after TIMEOUT, so while the 300 arrive at most
    # 64 x (1 + opening // TIMEOUT) of them can be admitted (408); every other one is refused at once (503)
    admitted_at_most = 64 * (1 + int(opening // TIMEOUT))
    assert 1 <= counts.get(b"408", 0) <= admitted_at_most, (counts, f"opened in {opening:.1f} s")
    assert peak <= baseline + 64 + 2, (baseline, peak)
    assert after <= baseline + 1, (baseline, after)
    assert call(served.rest_port, "GET", f"/v1/models/{H.MODEL_NAME}")[0] == 200  # still serving


def test_slow_headers_and_idle_connections_are_dropped(served, no_tracebacks):
    """A client dribbling its headers (one byte per second) or idling after a request is closed after the timeout."""
    dribbler = socket.create_connection(("127.0.0.1", served.rest_port))
    idler = socket.create_connection(("127.0.0.1", served.rest_port))
    idler.sendall(f"GET /v1/models/{H.MODEL_NAME} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    started = time.monotonic()
    stop = threading.Event()

    def dribble():
        for byte in f"GET /v1/models/{H.MODEL_NAME} HTTP/1.1\r\nHost: x\r\n".encode():
            if stop.wait(0.4):
                return
            try:
                dribbler.send(bytes([byte]))
            except OSError:
                return

    thread = threading.Thread(target=dribble)
    thread.start()
    closed = _wait_closed([dribbler, idler], TIMEOUT + 4)
    took = time.monotonic() - started
    stop.set()
    thread.join()
    assert len(closed) == 2, took
    assert closed[idler].startswith(b"HTTP/1.1 200"), closed[idler][:40]  # answered, then dropped when idle
    assert took < TIMEOUT + 2, took
    dribbler.close()
    idler.close()


def test_connections_beyond_the_limit_are_answered_503(served, no_tracebacks):
    from serving.rest import RestServer

    rest = RestServer(served.models, "127.0.0.1", 0, timeout=5.0, max_connections=4)
    try:
        held = [socket.create_connection(("127.0.0.1", rest.port)) for _ in range(4)]
        time.sleep(0.2)
        status, answer = call(rest.port, "GET", f"/v1/models/{H.MODEL_NAME}")
        assert status == 503 and "at most 4 at once" in answer["error"], answer
        for sock in held:
            sock.close()
        time.sleep(0.3)
        assert call(rest.port, "GET", f"/v1/models/{H.MODEL_NAME}")[0] == 200
    finally:
        rest.stop_accepting()


def test_a_stalled_tls_handshake_blocks_no_one(served, tmp_path, no_tracebacks):
    """The handshake ran on the accepting thread: one client that connected and sent nothing stopped the port."""
    from serving.rest import RestServer

    cert, key = _self_signed(tmp_path)
    rest = RestServer(served.models, "127.0.0.1", 0, timeout=1.0, ssl_context=check_tls_files(cert, key))
    stalled = socket.create_connection(("127.0.0.1", rest.port))  # no ClientHello, ever
    try:
        time.sleep(0.1)
        context = ssl.create_default_context(cafile=cert)
        started = time.perf_counter()
        status, _ = call(rest.port, "GET", f"/v1/models/{H.MODEL_NAME}", context=context, timeout=5)
        assert status == 200 and time.perf_counter() - started < 1.0
        assert len(_wait_closed([stalled], 3)) == 1  # and the stalled one is dropped after the timeout
    finally:
        stalled.close()  # (before stopping: the old server's accepting thread was stuck in its handshake)
        rest.stop_accepting()


# -- every bad request is a 4xx, without a traceback -------------------------------------------------------
@pytest.mark.parametrize("body, status, words", [
    (b"\xff\xfe{}", 400, ["UTF-8"]),
    (b"\xef\xbb\xbf{}", 400, ["not valid JSON"]),
    (b'{"inputs": 5}', 400, ["'inputs' must map"]),
    (b"[]", 400, ["JSON object"]),
    (json.dumps({"inputs": _inputs(query=[[{"a": 1}]])}).encode(), 400, ["'query'"]),
    (json.dumps({"inputs": _inputs(query_length=[[6]])}).encode(), 400, ["'query_length'", "rank"]),
    (json.dumps({"inputs": _inputs(query=(np.ones((1, 6, H.FEATURE_DIM)) * 1e39).tolist())}).encode(), 400,
     ["'query'", "outside the range of float32"]),
    (json.dumps({"instances": [{"query": [[0.0] * 8], "query_length": 1, "reference": [[0.0] * 8],
                                "reference_length": 1},
                               {"query": [[0.0] * 8], "query_length": [1], "reference": [[0.0] * 8],
                                "reference_length": 1}]}).encode(), 400, ["instances[1]", "does not stack"]),
    (b'{"inputs": {"query": [' + b'"",' * 1_100_000 + b'""]}}', 400, ["strings"]),
    (b'{"inputs": {"query": [' + b"[]," * 1_400_000 + b"[]]}}", 400, ["lists"]),
    (b'{"inputs": {"query": [' + b"0," * 2_200_000 + b"0]}}", 400, ["values"]),
])
def test_bad_bodies_are_4xx(served, no_tracebacks, body, status, words):
    got, answer = _post(served, body)
    assert got == status, answer
    for word in words:
        assert word in answer["error"], (word, answer)


def test_bad_framing_and_methods_are_4xx(served, no_tracebacks):
    port = served.rest_port
    status, answer = call(port, "PUT", PREDICT, b"{}")
    assert status == 400 and "Malformed request" in answer["error"]
    status, answer = call(port, "POST", PREDICT, b"{}", headers={"Content-Length": "-5"})
    assert status == 400 and "Content-Length" in answer["error"]
    status, answer = call(port, "POST", PREDICT, iter([b"{}"]), headers={"Transfer-Encoding": "chunked"})
    assert status == 411, answer
    sock = socket.create_connection(("127.0.0.1", port))  # a client that leaves mid-body
    sock.sendall(f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{{".encode())
    sock.close()
    time.sleep(0.3)
    assert call(port, "GET", f"/v1/models/{H.MODEL_NAME}")[0] == 200


# -- the scan and the JSON output, without a server ---------------------------------------------------------
def test_scan_counts_outside_strings_only_and_is_fast():
    """Brackets, commas and escaped quotes inside strings do not count, across chunk boundaries; 37 MB < 1 s."""
    from serving import json_limits as J

    roomy = J.JsonLimits(10**9, 10**9, 10**9, 10**9, 10**9)
    text = json.dumps({"a\\\"[": ["x\\", "{,}", "\"]\\\\", [1, 2, {"b": []}]], "c": "\\\\\\\""}).encode()
    want = J.scan(text, roomy)
    assert (want.max_depth, want.values, want.lists, want.objects, want.strings) == (5, 6, 3, 2, 7)
    for size in (1, 2, 3, 7):  # every chunk boundary, including inside runs of backslashes
        scanner = J.JsonScanner(roomy)
        for i in range(0, len(text), size):
            scanner.feed(text[i:i + size])
        assert scanner.counts == want, size
    body = b'{"inputs": {"query": [[[' + b"-0.123456789012345, " * 1_850_000 + b"0]]]}}"
    started = time.perf_counter()
    counts = J.scan(body, roomy)
    took = time.perf_counter() - started
    print(f"scan of a {len(body) / 1e6:.0f} MB body: {took:.3f} s")
    assert counts.values == 1_850_000 and took < 1.0


def test_json_outputs_write_strings_and_nan_as_tf_serving_does():
    from serving.rest_json import json_outputs

    outputs = {"video_id": np.array([b"clip-\xc3\xa9", b"\xff\xfe"], dtype=object),
               "thumb_bytes": np.array([b"ok"], dtype=object),
               "start_seconds": np.array([np.nan, 1.5], np.float32), "start_index": np.array([3, 2**40], np.int64)}
    text = json.dumps(json_outputs(outputs, "columnar", []))
    out = json.loads(text)["outputs"]
    assert out["video_id"] == ["clip-\u00e9", {"b64": "//4="}]  # UTF-8 as text; not UTF-8 as base64
    assert out["thumb_bytes"] == [{"b64": "b2s="}]  # a name ending in _bytes: always base64
    assert out["start_index"] == [3, 2**40]
    assert '"start_seconds": [NaN, 1.5]' in text  # TF Serving's NaN token


def test_row_format_needs_a_batched_servable():
    from serving.rest_json import arrays_from_json
    from serving.validation import InvalidRequest

    class Unbatched:  # the REST part of the servable interface, like library search's
        batched = False
        model_name = "search"

        def input_dtypes(self, signature_name):
            return {"query": "float32", "top_k": "int32"}

        def check_shapes(self, signature_name, shapes):
            pass

    with pytest.raises(InvalidRequest, match="columnar format only"):
        arrays_from_json({"instances": [{"query": [[0.0]]}]}, Unbatched(), "serving_default")
    arrays, fmt, _ = arrays_from_json({"inputs": {"query": [[0.5]], "top_k": 3}}, Unbatched(), "serving_default")
    assert fmt == "columnar" and arrays["top_k"].dtype == np.int32 and arrays["top_k"].shape == ()


def test_metrics_path_and_refusals_counted(served, no_tracebacks):
    from serving.metrics import PROMETHEUS_PATH, ServerMetrics
    from serving.rest import RestServer

    metrics = ServerMetrics(served.models)
    rest = RestServer(served.models, "127.0.0.1", 0, timeout=5.0, metrics=metrics, metrics_path=PROMETHEUS_PATH)
    try:
        assert _post_to(rest.port, {"inputs": _inputs()})[0] == 200
        assert call(rest.port, "POST", PREDICT, b"{not json")[0] == 400
        assert call(rest.port, "POST", PREDICT, b"[" * 100)[0] == 400
        connection = http.client.HTTPConnection("127.0.0.1", rest.port, timeout=10)
        connection.request("GET", PROMETHEUS_PATH)
        response = connection.getresponse()
        text = response.read().decode()
        connection.close()
        assert response.status == 200 and response.getheader("Content-Type").startswith("text/plain")
        counted = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(":tensorflow:serving:request_count_total")}
        refused = [k for k in counted if 'status="INVALID_ARGUMENT"' in k and 'entrypoint="REST"' in k]
        answered = [k for k in counted if 'status="OK"' in k and 'entrypoint="REST"' in k]
        assert refused and counted[refused[0]] == 2, counted
        assert answered and counted[answered[0]] == 1, counted
        assert call(rest.port, "POST", PROMETHEUS_PATH, b"")[0] == 405
    finally:
        rest.stop_accepting()


def _self_signed(tmp_path):
    """A throwaway certificate for localhost/127.0.0.1 and its key (PEM files)."""
    from helpers.tls import self_signed

    return self_signed(tmp_path)
