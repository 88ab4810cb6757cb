"""`/ui/`: the jobs dashboard, a static page that talks to this API from the browser.

The page and its scripts hold no data, so they are served without a token (`api.auth.OPEN_ENDPOINTS`); everything
the page shows comes from the API's own routes, called by the script with the `X-TRAINER-TOKEN` the user typed into
its login form (kept in the tab's sessionStorage). Without a token the page shows only that form.

The files live in `api/ui/static/`, versioned with the code: no build step, no CDN, nothing fetched at run time.
A strict Content-Security-Policy allows scripts, styles and requests from this origin only.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory
from flask.typing import ResponseReturnValue

from api.apidoc import documented

STATIC = Path(__file__).resolve().parent / "static"

bp = Blueprint("ui", __name__, url_prefix="/ui")

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def _harden(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-cache"  # revalidated (ETag) so a new release is picked up at once
    return response


@bp.get("/")
@documented("The jobs dashboard (HTML)", {200: {"description": "the dashboard's page",
                                                "content": {"text/html": {"schema": {"type": "string"}}}}}, open=True)
def index() -> ResponseReturnValue:
    return _harden(send_from_directory(STATIC, "index.html", max_age=0))


@bp.get("/static/<path:filename>")
@documented("The dashboard's scripts and styles", {200: "the file", 404: "no such file"}, open=True)
def static_file(filename: str) -> ResponseReturnValue:
    """A file of api/ui/static/ (send_from_directory refuses paths that leave it)."""
    return _harden(send_from_directory(STATIC, filename, max_age=0))
