"""How a refused request is answered: the gRPC status code (TF Serving's choice of code for each case), and over REST
the HTTP status TF Serving maps that code to.

Why a module of its own: the model manager (unknown version), the servicers
(unknown signature, bad input) and every transport must answer the same case
with the same code, so the code travels with the error instead of being
chosen again where the error is caught. Every refusal of the server is a
:class:`ServingError` -- the gRPC and REST servicers catch that one type; the
kinds with a fixed code (a malformed request, a JSON body too complex, a body
too large, a client that stalls or leaves) are :class:`Refusal` subclasses that
carry it.
"""
from __future__ import annotations

from typing import Optional

import grpc


class ServingError(Exception):
    """An error with the gRPC status code it is answered with (and, over REST, its HTTP status)."""

    http: Optional[int] = None  # an HTTP status other than the code's own mapping (413, 408, 499)

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return self.http or http_status(self.code)


class Refusal(ServingError):
    """A refusal whose code is fixed by its kind: a subclass sets ``CODE`` (and ``http`` where REST differs)."""

    CODE = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, message: str):
        super().__init__(self.CODE, message)


# gRPC code -> HTTP status, as TF Serving's REST server maps them (model_servers/http_server.cc).
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,  # client closed request
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def http_status(code: grpc.StatusCode) -> int:
    return HTTP_STATUS.get(code, 500)
