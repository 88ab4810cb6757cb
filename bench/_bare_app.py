"""The baseline of the API benchmark: a bare Flask JSON endpoint, served by the same gunicorn settings as the API.

`POST /echo` parses the JSON body and answers 202 with a small JSON object; `GET /echo` answers 200 with one. No
auth, no validation, no Redis: what is left is gunicorn, Werkzeug and Flask's JSON, the floor under any endpoint.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, request


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/echo")
    def echo_post() -> Any:
        body = request.get_json(silent=True) or {}
        return jsonify({"name": str(body.get("run_id", "")), "status": "queued"}), 202

    @app.get("/echo")
    def echo_get() -> Any:
        return jsonify({"name": "bare", "status": "queued"})

    return app
