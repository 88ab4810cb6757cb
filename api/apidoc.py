"""`@documented(...)`: what a view adds to `/openapi.json` beyond what its route and schemas already say.

`api.openapi` builds the document from the app's URL map: each rule is a path (`<name>` becomes the path parameter
`{name}`), each of its methods an operation. The view's `Operation` names the rest: a summary, the marshmallow schema
its query string is loaded with, the component its JSON body is validated against, and its answers. A view served
with a token answers 401 and 403 too, and 503 when it needs Redis; those are added here, once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from marshmallow import Schema

F = TypeVar("F", bound=Callable[..., Any])

#: The attribute of a view function that holds its `Operation`.
ATTRIBUTE = "__openapi__"

#: An answer: a description (an error's body is the `Error` component, a success's unspecified), a (description,
#: component) pair, or an OpenAPI response object as is.
Answer = str | tuple[str, str] | dict[str, Any]


def ref(component: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{component}"}


def answer(description: str, component: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref(component)}}}


_AUTH_ERRORS: dict[int, Answer] = {
    401: "missing token",
    403: "wrong token, or a namespace or storage location the tenant may not use",
}
_REDIS_DOWN: dict[int, Answer] = {503: "Redis unreachable (with Retry-After)"}


@dataclasses.dataclass(frozen=True)
class Operation:
    summary: str
    responses: Mapping[int, Answer]
    query: type[Schema] | None = None
    """The schema the view loads `request.args` with; its fields become the query parameters."""
    body: str | None = None
    """The component schema of the required JSON request body."""
    open: bool = False
    """Served without a token (see `api.auth.OPEN_ENDPOINTS`): no security requirement, no 401/403."""
    needs_redis: bool = True
    """An authenticated view that reads or writes Redis answers 503 when it is unreachable."""

    def to_openapi(self, path_parameters: list[str]) -> dict[str, Any]:
        """The OpenAPI operation object of this view on a rule with these path parameters."""
        parameters: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in path_parameters]
        if self.query is not None:
            parameters.append({"in": "query", "schema": self.query})
        responses = dict(self.responses)
        if not self.open:
            responses |= _AUTH_ERRORS | (_REDIS_DOWN if self.needs_redis else {})
        operation: dict[str, Any] = {
            "summary": self.summary,
            "responses": {str(code): _response(code, a) for code, a in sorted(responses.items())},
        }
        if parameters:
            operation["parameters"] = parameters
        if self.body is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(self.body)}}}
        if self.open:
            operation["security"] = []
        return operation


def _response(code: int, given: Answer) -> dict[str, Any]:
    if isinstance(given, dict):
        return given
    if isinstance(given, tuple):
        return answer(*given)
    return answer(given, "Error") if code >= 400 else {"description": given}


def documented(summary: str, responses: Mapping[int, Answer], **options: Any) -> Callable[[F], F]:
    """Attach an `Operation` (see its fields for `options`) to a view; put it below the route decorator."""
    operation = Operation(summary, responses, **options)

    def attach(view: F) -> F:
        setattr(view, ATTRIBUTE, operation)
        return view

    return attach
