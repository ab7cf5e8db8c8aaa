"""One error type for every refusal of the server (serving/status.py): each kind carries its gRPC code and, over
REST, its HTTP status, so both servicers answer a case the same way by catching ServingError alone."""
import grpc
import pytest

from serving.http_transport import BodyTooLarge, ClientGone, ClientStalled
from serving.json_limits import JsonTooComplex
from serving.status import HTTP_STATUS, Refusal, ServingError, http_status
from serving.validation import InvalidRequest

KINDS = [(InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT, 400),
         (JsonTooComplex, grpc.StatusCode.INVALID_ARGUMENT, 400),
         (BodyTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED, 413),
         (ClientStalled, grpc.StatusCode.DEADLINE_EXCEEDED, 408),
         (ClientGone, grpc.StatusCode.CANCELLED, 499)]


@pytest.mark.parametrize("kind,code,http", KINDS, ids=[k.__name__ for k, _, _ in KINDS])
def test_every_refusal_is_a_serving_error_with_its_code(kind, code, http):
    exc = kind("input 'query': bad")
    assert isinstance(exc, ServingError) and isinstance(exc, Refusal)
    assert exc.code == code and exc.message == "input 'query': bad" == str(exc)
    assert exc.http_status == http


def test_malformed_input_stays_a_value_error_for_library_callers():
    assert issubclass(InvalidRequest, ValueError) and issubclass(JsonTooComplex, ValueError)


@pytest.mark.parametrize("code", list(grpc.StatusCode))
def test_a_plain_serving_error_answers_tf_servings_http_status(code):
    assert ServingError(code, "x").http_status == http_status(code) == HTTP_STATUS.get(code, 500)
