"""The REST server's HTTP transport, hardened against hostile clients: bodies, budgets, timeouts, connections.

Why a module of its own: none of this knows models or JSON formats -- it bounds
what any client can cost the server in memory, time and threads, and hands each
request to an :class:`Api` (serving/rest.py's ``RestApi``) as a
:class:`RequestBody`. REST must be as hard to knock over as gRPC, whose library
bounds message sizes and connections for us:

* memory: bodies being read or parsed at once share a byte budget
  (:class:`ByteBudget`; by default ``BODY_BUDGET_FACTOR`` times the largest
  legal body of the models asked so far); a request that cannot get its share
  before its deadline is answered 503;
* time: every connection has a socket timeout of ``timeout`` (``--rest-timeout``)
  and a watchdog closes one that has not finished its TLS handshake, its
  request headers or its body within ``timeout`` (or that sits idle that long
  between requests); a body is read in chunks against its request's deadline
  (408 when it does not arrive), and a refused body is drained so the client
  reads the answer;
* connections: at most ``max_connections`` at once, each on its own thread.
  Beyond that a new connection is answered 503 and closed by the accepting
  thread without reading it (over TLS it is closed unanswered, since answering
  would need a handshake on the accepting thread).
"""
from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, Optional, Protocol, Tuple

import grpc

from serving.status import Refusal, ServingError

log = logging.getLogger("serving.rest")  # the REST server's log: one name for its API and its transport

_CONTENT_LENGTH = re.compile(r"\s*[0-9]+\s*")
DRAIN_LIMIT_BYTES = 256 << 20  # a refused body up to this size is read and dropped, so the client gets the answer
READ_CHUNK_BYTES = 1 << 18  # a body is read (and scanned) in pieces of at most this size
BODY_BUDGET_FACTOR = 2  # default body budget: this many times the largest legal body
WATCHDOG_BACKSTOP_SECONDS = 1.0  # past a body's deadline, before the watchdog closes a connection that missed it
JSON = "application/json"


class BodyTooLarge(Refusal):
    """A body larger than any request within the limits: refused before it is read (HTTP 413)."""

    CODE, http = grpc.StatusCode.RESOURCE_EXHAUSTED, 413


class ClientStalled(Refusal):
    """The client did not send its body before the request's deadline (HTTP 408; the connection is closed)."""

    CODE, http = grpc.StatusCode.DEADLINE_EXCEEDED, 408


class ClientGone(Refusal):
    """The client closed the connection (or it failed) mid-body: nobody to answer (499 in the metrics only)."""

    CODE, http = grpc.StatusCode.CANCELLED, 499


class RequestBody:
    """A request's body as it arrives: read in chunks against the request's deadline, never past ``length``.

    ``on_read`` is called once the body is all in (the connection's read deadline ends there).
    """

    def __init__(self, rfile, connection, length: int, deadline: float, timeout: float,
                 on_read: Callable[[], None] = lambda: None):
        self.rfile, self.connection = rfile, connection
        self.length, self.deadline, self.timeout = length, deadline, timeout
        self.on_read = on_read
        self.consumed = 0
        self.stalled = self.gone = False  # either way the connection cannot carry another request
        if length == 0:
            on_read()

    def _chunks(self):
        while self.consumed < self.length:
            left = self.deadline - time.monotonic()
            if left <= 0:
                self.stalled = True
                raise ClientStalled(f"the request body did not arrive within --rest-timeout ({self.timeout:g} s): "
                               f"{self.consumed} of {self.length} bytes came")
            try:
                self.connection.settimeout(min(left, self.timeout))
                chunk = self.rfile.read1(min(READ_CHUNK_BYTES, self.length - self.consumed))
            except TimeoutError:
                continue  # the deadline check above answers
            except OSError as exc:
                self.gone = True
                raise ClientGone(f"connection failed after {self.consumed} of {self.length} bytes ({exc})") from None
            finally:
                try:
                    self.connection.settimeout(self.timeout)
                except OSError:
                    pass
            if not chunk:
                self.gone = True
                raise ClientGone(f"the client closed the connection after {self.consumed} of {self.length} bytes")
            self.consumed += len(chunk)
            if self.consumed == self.length:
                self.on_read()
            yield chunk

    def read(self, on_chunk: Optional[Callable[[bytes], None]] = None) -> bytearray:
        """The whole body; ``on_chunk`` sees each piece first (and may refuse it by raising)."""
        data = bytearray()
        for chunk in self._chunks():
            if on_chunk is not None:
                on_chunk(chunk)
            data += chunk
        return data

    def drain(self) -> bool:
        """Read and drop the rest (nothing kept); False when the client stalled or left."""
        try:
            for _ in self._chunks():
                pass
        except (ClientStalled, ClientGone):
            return False
        return True


class ByteBudget:
    """Bytes of request bodies held at once: ``hold(n, deadline)`` waits for room until ``deadline``.

    ``capacity`` None: grows to ``BODY_BUDGET_FACTOR`` times the largest legal body of
    the models asked so far (:meth:`fit`), so the default follows the limits.
    """

    def __init__(self, capacity: Optional[int] = None):
        self.fixed = capacity is not None
        self.capacity = capacity or 0
        self.used = 0
        self._cond = threading.Condition()

    def fit(self, largest_body: int) -> None:
        if not self.fixed:
            with self._cond:
                if BODY_BUDGET_FACTOR * largest_body > self.capacity:
                    self.capacity = BODY_BUDGET_FACTOR * largest_body
                    self._cond.notify_all()

    def acquire(self, n: int, deadline: float) -> None:
        with self._cond:
            if n > self.capacity:
                raise BodyTooLarge(f"request body of {n} bytes is above the server's body budget of {self.capacity} "
                                f"bytes (bodies being read at once)")
            while self.used + n > self.capacity:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ServingError(grpc.StatusCode.UNAVAILABLE,
                                       f"the server is busy reading other request bodies ({self.used} of "
                                       f"{self.capacity} bytes of body budget in use) and had no room for this "
                                       f"one's {n} bytes within --rest-timeout; retry later")
                self._cond.wait(left)
            self.used += n

    def release(self, n: int) -> None:
        with self._cond:
            self.used -= n
            self._cond.notify_all()

def json_answer(status: int, answer: dict) -> Tuple[int, bytes, str]:
    return status, json.dumps(answer).encode("utf-8"), JSON


class Api(Protocol):
    """What :class:`RequestHandler` serves (serving/rest.py's ``RestApi``)."""

    timeout: float  # a request's deadline, after its headers arrived

    def handle(self, method: str, path: str, body: RequestBody) -> Tuple[int, bytes, str]:
        """(status, payload, content type) of one request."""


class _Watchdog:
    """Closes connections that outlive their deadline: a stalled TLS handshake, request headers or body, or idling.

    Why a thread of its own: a socket timeout bounds one ``recv``, not a client
    that sends a byte every few seconds; shutting the socket down wakes the
    connection's thread from whatever read it is blocked in, and it ends.
    """

    def __init__(self, timeout: float):
        self._entries: Dict[int, list] = {}  # thread id -> [socket, deadline or None]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._interval = max(0.05, min(0.5, timeout / 8))
        self._thread = threading.Thread(target=self._run, name="vreloc-rest-watchdog", daemon=True)
        self._thread.start()

    def set(self, sock, deadline: Optional[float]) -> None:
        """The calling connection thread's socket must be done with what it reads by ``deadline`` (None: no limit)."""
        with self._lock:
            self._entries[threading.get_ident()] = [sock, deadline]

    def drop(self) -> None:
        with self._lock:
            self._entries.pop(threading.get_ident(), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            now = time.monotonic()
            with self._lock:
                expired = [entry for entry in self._entries.values() if entry[1] is not None and entry[1] <= now]
                for entry in expired:
                    entry[1] = None
            for sock, _ in expired:
                try:
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's, also under TLS
                except OSError:
                    pass


class BoundedHTTPServer(ThreadingHTTPServer):
    """One thread per connection, at most ``max_connections`` of them; TLS handshakes on the connection's thread."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address, handler, timeout: float, max_connections: int, ssl_context=None):
        self.connection_timeout = timeout
        self.max_connections = max_connections
        self.ssl_context = ssl_context
        self.watchdog = _Watchdog(timeout)
        self._slots = threading.BoundedSemaphore(max_connections)
        self.refused_connections = 0
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused_connections += 1
            self._refuse(request)
            return
        try:
            threading.Thread(target=self._serve, args=(request, client_address), name="vreloc-rest-connection",
                             daemon=True).start()
        except RuntimeError:  # no thread to be had
            self._slots.release()
            self._refuse(request)

    def _refuse(self, sock) -> None:
        """Over the connection limit: a 503 without reading (never blocks the accepting thread), then close."""
        try:
            if self.ssl_context is None:
                sock.setblocking(False)
                try:
                    sock.recv(1 << 16)  # what already came, so closing sends FIN rather than RST
                except OSError:
                    pass
                payload = json.dumps({"error": f"too many connections: the REST server serves at most "
                                               f"{self.max_connections} at once; retry later"}).encode()
                sock.send(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                          b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload))
        except OSError:
            pass
        finally:
            sock.close()

    def _serve(self, sock, client_address) -> None:
        connection = sock
        try:
            sock.settimeout(self.connection_timeout)
            self.watchdog.set(sock, time.monotonic() + self.connection_timeout)
            if self.ssl_context is not None:
                connection = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                self.watchdog.set(connection, time.monotonic() + self.connection_timeout)
                connection.do_handshake()
            self.finish_request(connection, client_address)
        except OSError as exc:  # the client left, stalled or spoke bad TLS: its fault, nothing to log loudly
            log.debug("REST connection from %s ended: %s", client_address, exc)
        except Exception:  # noqa: BLE001 - a bug of ours
            log.exception("REST connection from %s failed", client_address)
        finally:
            self.watchdog.drop()
            self.shutdown_request(connection)
            self._slots.release()

    def server_close(self) -> None:
        super().server_close()
        self.watchdog.stop()


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "vreloc-serving"
    api: Api  # set on the subclass made by RestServer (serving/rest.py)
    timeout: float  # the socket timeout of each connection (StreamRequestHandler.setup applies it)

    def _answer(self, method: str) -> None:
        started = time.perf_counter()
        timeout = self.api.timeout
        deadline = time.monotonic() + timeout
        watchdog = self.server.watchdog
        # The body has until the request's deadline (RequestBody answers 408 then; the watchdog, a moment later,
        # is the backstop), and no read limit once it is in.
        watchdog.set(self.connection, deadline + WATCHDOG_BACKSTOP_SECONDS)
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") is not None:
            body = RequestBody(self.rfile, self.connection, 0, deadline, timeout)
            status, payload, content_type = json_answer(411, {"error": "send the body with a Content-Length "
                                                                        "(Transfer-Encoding is not supported)"})
            self.close_connection = True
        elif length is not None and not _CONTENT_LENGTH.fullmatch(length):
            body = RequestBody(self.rfile, self.connection, 0, deadline, timeout)
            status, payload, content_type = json_answer(400, {"error": f"bad Content-Length {length[:40]!r}"})
            self.close_connection = True
        else:
            body = RequestBody(self.rfile, self.connection, int(length or 0), deadline, timeout,
                               on_read=lambda: watchdog.set(self.connection, None))
            status, payload, content_type = self.api.handle(method, self.path, body)
        if body.consumed < body.length and not (body.stalled or body.gone):  # refused before all was read: drop
            watchdog.set(self.connection, deadline + WATCHDOG_BACKSTOP_SECONDS)  # the rest (no copy kept) so that the
            # client reads our answer
            if body.length - body.consumed > DRAIN_LIMIT_BYTES or not body.drain():
                self.close_connection = True
        if body.gone:  # nobody to answer
            self.close_connection = True
            log.debug("REST %s %s: the client left mid-body", method, self.path)
            return
        if body.stalled:
            self.close_connection = True
        watchdog.set(self.connection, time.monotonic() + timeout)  # writing the answer, then idling for the next
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        log.debug("REST %s %s status=%d %.2f ms", method, self.path, status, 1e3 * (time.perf_counter() - started))

    def do_GET(self):  # noqa: N802 - http.server's naming
        self._answer("GET")

    def do_POST(self):  # noqa: N802
        self._answer("POST")

    def __getattr__(self, name: str):
        """Any other method (PUT, DELETE, ...): TF Serving's 400 "Malformed request", not http.server's 501."""
        if name.startswith("do_"):
            return lambda: self._answer(name[3:])
        raise AttributeError(name)

    def log_message(self, fmt, *args):  # requests are logged at debug level by _answer
        pass
