"""The query side of the Kubernetes API emulator: label selectors, LIST continue tokens, JSON merge patches."""

from __future__ import annotations

import base64
import json
from typing import Any


class Reply(Exception):
    """An HTTP answer other than 2xx, raised from deep inside a handler."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def parse_selector(text: str) -> Any:
    """A predicate over a label dict for an equality-based selector (`k=v,k!=v,k,!k`)."""
    tests: list[tuple[str, str, str]] = []  # (op, key, value)
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "!=" in part:
            key, value = part.split("!=", 1)
            tests.append(("!=", key.strip(), value.strip()))
        elif "=" in part:
            key, value = part.replace("==", "=").split("=", 1)
            tests.append(("=", key.strip(), value.strip()))
        elif part.startswith("!"):
            tests.append(("absent", part[1:], ""))
        else:
            tests.append(("present", part, ""))

    def holds(labels: dict[str, str], op: str, key: str, value: str) -> bool:
        return {"!=": labels.get(key) != value, "=": labels.get(key) == value,
                "absent": key not in labels, "present": key in labels}[op]

    return lambda labels: all(holds(labels, *test) for test in tests)


def decode_continue(token: str) -> int:
    try:
        return int(json.loads(base64.urlsafe_b64decode(token.encode()))["start"])
    except (ValueError, KeyError, TypeError) as exc:
        raise Reply(400, "BadRequest", "invalid continue token") from exc


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
