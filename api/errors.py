"""The one place that turns errors into JSON: `{"error": {"code", "message", "fields"}}` with the right status.

Bad input is always a 4xx: validation (400), unknown job (404), state conflicts (409), oversized bodies (413).
Redis being unreachable or out of memory is 503 with `Retry-After`; a tenant at its job cap is 429. Only a bug is a
500, and it still answers JSON without details: no error body carries an internal address or a stack trace.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Flask, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from broker.errors import Busy, IllegalTransition, JobConflict, JobNotFound, TooManyJobs

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answered as JSON with `status`; `extra` adds keys beside code/message/fields."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        fields: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.fields = fields or {}
        self.headers = headers or {}
        self.extra = extra

    def response(self) -> ResponseReturnValue:
        body = {"error": {"code": self.code, "message": self.message, "fields": self.fields, **self.extra}}
        return jsonify(body), self.status, self.headers


def invalid(fields: dict[str, Any], message: str = "the request is invalid") -> ApiError:
    return ApiError(400, "invalid_request", message, fields)


def _http(exc: HTTPException) -> ResponseReturnValue:
    code = (exc.name or "error").lower().replace(" ", "_")
    return ApiError(exc.code or 500, code, exc.description or exc.name or "error").response()


#: How much of an oversized body is read and discarded so that the client, still sending, can read its 413: a server
#: that closes a socket with unread bytes makes the kernel answer with a reset, and the client loses the response.
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024
_DRAIN_CHUNK = 64 * 1024


def _too_large(exc: RequestEntityTooLarge) -> ResponseReturnValue:
    stream = request.environ.get("wsgi.input")
    remaining = min(request.content_length or DRAIN_LIMIT_BYTES, DRAIN_LIMIT_BYTES)
    while stream is not None and remaining > 0:
        chunk = stream.read(min(_DRAIN_CHUNK, remaining))
        if not chunk:
            break
        remaining -= len(chunk)
    message = exc.description or "body too large"
    return ApiError(413, "request_entity_too_large", message, headers={"Connection": "close"}).response()


def _redis_down(exc: redis.RedisError) -> ResponseReturnValue:
    log.warning("Redis unreachable: %s", exc)
    retry_after = str(current_app.config["SETTINGS"].retry_after_s)
    headers = {"Retry-After": retry_after}
    return ApiError(503, "unavailable", "the job store is unreachable; retry later", headers=headers).response()


def _out_of_memory(exc: redis.ResponseError) -> ResponseReturnValue:
    """Redis at `maxmemory` (noeviction) refuses writes: 503 with Retry-After; any other reply error is a bug."""
    if not isinstance(exc, redis.exceptions.OutOfMemoryError) and "OOM" not in str(exc):
        return _bug(exc)
    log.warning("Redis is out of memory: %s", exc)
    headers = {"Retry-After": str(current_app.config["SETTINGS"].retry_after_s)}
    return ApiError(503, "unavailable", "the job store is full; retry later", headers=headers).response()


def _too_many(exc: TooManyJobs) -> ResponseReturnValue:
    headers = {"Retry-After": str(current_app.config["SETTINGS"].retry_after_s)}
    return ApiError(429, "too_many_jobs", str(exc), headers=headers, limit=exc.limit).response()


def _not_found(exc: JobNotFound) -> ResponseReturnValue:
    return ApiError(404, "not_found", f"no job named {exc.name!r}").response()


def _conflict(exc: JobConflict) -> ResponseReturnValue:
    message = f"job {exc.existing.name!r} already exists with a different request"
    return ApiError(409, "conflict", message, {"job_name": [message]}, job=exc.existing.name).response()


def _illegal(exc: IllegalTransition) -> ResponseReturnValue:
    return ApiError(409, "invalid_state", str(exc), current_status=exc.current.value).response()


def _busy(exc: Busy) -> ResponseReturnValue:
    return ApiError(409, "busy", str(exc)).response()


def _bug(exc: Exception) -> ResponseReturnValue:
    log.exception("unhandled error")
    return ApiError(500, "internal_error", "internal error").response()


def register(app: Flask) -> None:
    app.register_error_handler(ApiError, lambda exc: exc.response())
    app.register_error_handler(ValidationError, lambda exc: invalid(_messages(exc)).response())
    app.register_error_handler(RequestEntityTooLarge, _too_large)
    app.register_error_handler(HTTPException, _http)
    app.register_error_handler(redis.ConnectionError, _redis_down)
    app.register_error_handler(redis.TimeoutError, _redis_down)
    app.register_error_handler(redis.ResponseError, _out_of_memory)
    app.register_error_handler(TooManyJobs, _too_many)
    app.register_error_handler(JobNotFound, _not_found)
    app.register_error_handler(JobConflict, _conflict)
    app.register_error_handler(IllegalTransition, _illegal)
    app.register_error_handler(Busy, _busy)
    app.register_error_handler(Exception, _bug)


def _messages(exc: ValidationError) -> dict[str, Any]:
    messages = exc.messages
    return messages if isinstance(messages, dict) else {"_schema": messages}
