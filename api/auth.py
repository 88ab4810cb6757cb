"""`X-TRAINER-TOKEN` authentication, checked before every request except the open endpoints.

Open: `/healthz` and `/readyz` (probes carry no token), `/metrics`, and the dashboard's static files under `/ui/`
(they hold no data: the page asks for the token and sends it with every call it makes). `/metrics` is open on
purpose: Prometheus scrapes without the API token (which would otherwise have to be copied into every scrape
config), and what it exposes is request counts and latencies per route template and job counts per status — no job
names, requests or users. Put it behind the network policy or ingress rules if even counts are sensitive.

Tokens come from `TRAINER_API_TOKEN` (the tenant `default`, comma-separated during a rotation),
`TRAINER_TENANT_TOKENS` and `TRAINER_OPERATOR_TOKEN` (see `api.tenants`); each is compared in constant time. Missing
header → 401, wrong token → 403. The caller a token maps to is kept in `flask.g.caller`.
"""

from __future__ import annotations

import hmac

from flask import Flask, current_app, g, request

from api.errors import ApiError

HEADER = "X-TRAINER-TOKEN"
OPEN_ENDPOINTS = frozenset({"health.healthz", "health.readyz", "health.metrics", "ui.index", "ui.static_file"})


def token_ok(given: str, tokens: tuple[str, ...]) -> bool:
    """True when `given` equals one of `tokens`. Every token is compared, in constant time."""
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode())
    return matched


def check_token() -> None:
    settings = current_app.config["SETTINGS"]
    if settings.auth_disabled or request.endpoint in OPEN_ENDPOINTS:
        return
    given = request.headers.get(HEADER)
    if not given:
        raise ApiError(401, "unauthorized", f"the {HEADER} header is required", headers={"WWW-Authenticate": HEADER})
    found = current_app.extensions["tokens"].resolve(given)
    if found is None:
        raise ApiError(403, "forbidden", f"the {HEADER} token is not valid")
    g.caller = found


def install(app: Flask) -> None:
    app.before_request(check_token)
