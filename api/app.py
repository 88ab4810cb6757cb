"""The Flask application factory: `gunicorn "api.app:create_app()"`.

Nothing happens at import time. `create_app` reads the settings, refuses to start without a token (unless
authentication is explicitly disabled), connects the job store and the task sender, and registers the blueprints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis
from flask import Blueprint, Flask

from api import auth, errors
from api.enqueue import CeleryEnqueuer
from api.metrics import Metrics
from api.observe import bp as observe_bp
from api.openapi import bp as openapi_bp
from api.openapi import build_spec
from api.queue_routes import bp as queue_bp
from api.routes import bp as train_bp
from api.routes import health
from api.schemas import TrainingJobRequestSchema
from api.settings import ApiSettings
from api.tenants import build_tokens
from api.ui import bp as ui_bp
from broker.quota import QuotaLedger
from broker.settings import SettingsError
from broker.store import JobStore

#: Every blueprint the app serves: health, /train, progress/metrics/logs, /queue, /openapi.json, the /ui/ dashboard.
BLUEPRINTS: list[Blueprint] = [health, train_bp, observe_bp, queue_bp, openapi_bp, ui_bp]


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the API.

    `config` may hold Flask settings and:
    - `SETTINGS`: an `ApiSettings` (default: `ApiSettings.from_env(ENVIRON)`);
    - `ENVIRON`: the environment to read settings from (default: `os.environ`);
    - `ENQUEUE`: a callable `(task_name, job_name) -> bool` sending broker tasks (default: a Celery client on the
      settings' `REDIS_URL`).

    Raises `broker.settings.SettingsError` when no token is configured and `TRAINER_AUTH_DISABLED` is not set.
    """
    config = dict(config or {})
    settings: ApiSettings = config.pop("SETTINGS", None) or ApiSettings.from_env(config.pop("ENVIRON", None))
    settings.check()
    try:
        tokens = build_tokens(settings.broker, settings.api_tokens, settings.tenant_tokens, settings.operator_tokens)
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc
    enqueue = config.pop("ENQUEUE", None) or CeleryEnqueuer(settings.broker)

    app = Flask(__name__, static_folder=None)
    app.config.update(SETTINGS=settings, MAX_CONTENT_LENGTH=settings.max_body_bytes, **config)
    client = redis.Redis.from_url(
        settings.broker.redis_url, decode_responses=True, socket_connect_timeout=2, socket_timeout=5
    )
    store = JobStore(client, settings.broker.key_prefix)
    request_schema = TrainingJobRequestSchema(
        max_nodes=settings.max_nodes,
        max_gpus_per_node=settings.max_gpus_per_node,
        allowed_namespaces=settings.broker.allowed_namespaces,
        default_namespace=settings.broker.namespace,
        env_allow=settings.broker.env_allow,
        max_maps_bytes=settings.max_maps_bytes,
    )
    metrics = Metrics(store)
    quota = QuotaLedger(client, settings.broker.key_prefix)
    # The submit task's message travels in the create script when the broker is the store's Redis (api.enqueue).
    fused = enqueue if isinstance(enqueue, CeleryEnqueuer) and enqueue.delivers_to(settings.broker.redis_url) else None
    app.extensions.update(
        job_store=store, quota=quota, enqueue=enqueue, prepare_enqueue=fused.prepare if fused else None,
        request_schema=request_schema, metrics=metrics,
        openapi=build_spec(request_schema), tokens=tokens,
    )

    metrics.install(app)  # first, so refused requests are counted and timed too
    auth.install(app)
    errors.register(app)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    return app
