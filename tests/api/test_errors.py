"""The error shape on every failure (bad JSON, unknown field, wrong type, 404, 405, 500) and request ids."""

import logging

import pytest


def assert_error(reply, status: int, code: str) -> dict:
    assert reply.status == status, reply.body
    assert reply.headers["Content-Type"].startswith("application/json")
    error = reply.error
    assert set(error) == {"code", "message", "request_id", "param_errors"}
    assert error["code"] == code and error["message"]
    assert error["request_id"] == reply.headers["X-Request-Id"]
    return error


async def test_errors_bad_json_is_400(api):
    reply = await api.call("POST", "/v2/test/things", key=api.admin, data=b'{"name": ')
    error = assert_error(reply, 400, "bad_request")
    assert "not valid JSON" in error["message"] and error["param_errors"] == []


async def test_errors_non_json_content_type_is_400(api):
    reply = await api.call(
        "POST", "/v2/test/things", key=api.admin, data="name=a", headers={"Content-Type": "text/plain"}
    )
    error = assert_error(reply, 400, "bad_request")
    assert error["param_errors"][0]["param"] == "Content-Type"


@pytest.mark.parametrize(
    ("body", "param", "reason"),
    [
        ({"name": "a", "colour": "red"}, "colour", "unknown field `colour`"),
        ({"name": 7}, "name", "Expected `str`, got `int`"),
        ({"name": "a", "size": "big"}, "size", "Expected `int`, got `str`"),
        ({}, "name", "missing required field `name`"),
        ([1, 2], "(body)", "Expected `object`, got `array`"),
    ],
)
async def test_errors_body_that_does_not_fit_is_422_naming_the_param(api, body, param, reason):
    reply = await api.call("POST", "/v2/test/things", key=api.admin, json=body)
    error = assert_error(reply, 422, "invalid_param")
    assert error["param_errors"] == [{"param": param, "reason": reason}]
    assert api.things.executed == 0


async def test_errors_bad_query_is_422(api):
    reply = await api.call("GET", "/v2/keys?limit=500", key=api.admin)
    assert assert_error(reply, 422, "invalid_param")["param_errors"][0]["param"] == "limit"
    reply = await api.call("GET", "/v2/keys?limt=5", key=api.admin)
    assert assert_error(reply, 422, "invalid_param")["param_errors"][0]["param"] == "limt"


async def test_errors_unknown_path_is_404_in_the_error_shape(api):
    for path in ("/v2/nothing", "/nothing"):
        error = assert_error(await api.call("GET", path), 404, "not_found")
        assert path in error["message"]


async def test_errors_wrong_method_is_405_in_the_error_shape(api):
    reply = await api.call("DELETE", "/v2/account", key=api.admin)
    error = assert_error(reply, 405, "bad_request")
    assert "GET" in error["message"] and "GET" in reply.headers["Allow"]


async def test_errors_unexpected_exception_is_500_without_details(api, caplog):
    with caplog.at_level(logging.ERROR, logger="softswitch.api"):
        reply = await api.call("GET", "/v2/test/boom", key=api.admin)
    error = assert_error(reply, 500, "server_error")
    assert "secret internal detail" not in str(reply.body) and "RuntimeError" not in str(reply.body)
    logged = [r for r in caplog.records if r.exc_info]
    assert logged and "secret internal detail" in str(logged[0].exc_info[1])
    assert logged[0].request_id == error["request_id"]


async def test_errors_request_id_generated_or_echoed(api):
    first = await api.call("GET", "/health")
    second = await api.call("GET", "/health")
    assert first.headers["X-Request-Id"].startswith("req_")
    assert first.headers["X-Request-Id"] != second.headers["X-Request-Id"]
    echoed = await api.call("GET", "/v2/account", key=api.admin, headers={"X-Request-Id": "client-123.abc"})
    assert echoed.headers["X-Request-Id"] == "client-123.abc"
    odd = await api.call("GET", "/v2/nothing", headers={"X-Request-Id": "has spaces <script>"})
    assert odd.headers["X-Request-Id"].startswith("req_") and odd.error["request_id"] == odd.headers["X-Request-Id"]
    long = await api.call("GET", "/health", headers={"X-Request-Id": "x" * 129})
    assert long.headers["X-Request-Id"].startswith("req_")


async def test_errors_body_too_large_is_400_shape(api):
    reply = await api.call("POST", "/v2/test/things", key=api.admin, data=b"{" + b" " * (1024 * 1024 + 10) + b"}")
    assert_error(reply, 413, "bad_request")
