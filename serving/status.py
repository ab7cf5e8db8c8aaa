"""How a refused request is answered: the gRPC status code (TF Serving's choice of code for each case).

Why a module of its own: the model manager (unknown version), the servicers
(unknown signature, bad input) and every transport must answer the same case
with the same code, so the code travels with the error instead of being
chosen again where the error is caught.
"""
from __future__ import annotations

import grpc


class ServingError(Exception):
    """An error with the gRPC status code it is answered with."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message
