"""A small stateful Kubernetes API server for tests: the real REST paths over real HTTP, for the official client.

Serves `kubeflow.org/v1` PyTorchJobs and core `v1` ResourceQuotas:

- `POST   /apis/kubeflow.org/v1/namespaces/{ns}/pytorchjobs` → 201 with `uid`, `resourceVersion`,
  `creationTimestamp`; 422 `Invalid` Status when the object breaks the CRD schema or the webhook rules
  (`tests.support.pytorchjob_rules`); 409 `AlreadyExists` Status for a taken name; any `status` sent is dropped
  (the status subresource is on). With `?dryRun=All` the same checks run and the answer is the same, but nothing is
  stored (what a real API server does for a dry-run create).
- `GET    …/pytorchjobs` (LIST: `labelSelector` with `k=v`, `k==v`, `k!=v`, `k`, `!k`; `limit` + `continue`;
  `kind: PyTorchJobList`), `GET …/pytorchjobs/{name}`, `DELETE …/pytorchjobs/{name}` (records the propagation
  policy), `PATCH …/pytorchjobs/{name}/status` (merge patch).
- `GET    /api/v1/namespaces/{ns}/resourcequotas`.

Test controls (Python methods): `set_condition` / `set_replica_statuses` play the Training Operator,
`set_gpu_quota` adds a ResourceQuota, `deny_next(n, message)` answers the next creates (dry runs too) 403 Forbidden
as an admission policy does, `reject_next(n, message)` 422 Invalid as a validating admission webhook does, and
`kueue_admit` plays Kueue (all in `tests.support.k8s_controls`); `remove` deletes, `relabel` relabels and `put`
creates by hand; `fail_next`, `slow_next`, `drop_next` inject faults into the next N matching requests;
`calls(verb, namespace)` counts what the server received (verbs: `create`, `get`, `list`, `delete`, `patch`,
`quota`, `dry_run`); `requests` logs every request with its answer (`RequestEntry`); `chaos` takes a random fault
policy (`tests.support.k8s_chaos.Chaos`); `write_kubeconfig(path)` points a client (or a worker process) at it.
The HTTP side lives in `tests.support.k8s_http`, the query helpers in `tests.support.k8s_query`.
"""

from __future__ import annotations

import base64
import copy
import json
import tempfile
import threading
import uuid
from collections import Counter
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support.k8s_controls import ClusterControls, now
from tests.support.k8s_http import Fault, Handler, RequestEntry, verbs_of
from tests.support.k8s_query import Reply, decode_continue, merge, parse_selector
from tests.support.pytorchjob_rules import pytorchjob_problems


class K8sEmulator(ClusterControls):
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.quotas: dict[str, list[dict[str, Any]]] = {}
        self.faults: list[Fault] = []
        self.counts: Counter[tuple[str, str]] = Counter()
        self.delete_policies: list[str | None] = []
        self.version = 1000
        #: How many LIST continue tokens to refuse next with 410 Expired (as after a compaction).
        self.expire_continues = 0
        #: Bumped by `reset`: a request still in flight from before (a slow one) is dropped, not applied.
        self.generation = 0
        #: The status of a successful create: 201 like a real server; 200 reproduces a server that answers 200.
        self.create_code = 201
        #: `(remaining, code, reason, message)`: creates refused next (an admission policy's or webhook's refusal).
        self.denials: list[tuple[int, int, str, str]] = []
        self.server: ThreadingHTTPServer | None = None
        #: Every request received, in arrival order (the invariants of tests/reliability are read from it).
        self.requests: list[RequestEntry] = []
        #: A fault policy asked for each request no explicit fault claimed (`tests.support.k8s_chaos.Chaos`).
        self.chaos: Any = None

    # --- lifecycle --------------------------------------------------------------------------------------------

    def start(self) -> K8sEmulator:
        emulator = self

        class Bound(Handler):
            emu = emulator

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Bound)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def reset(self) -> None:
        with self.lock:
            self.generation += 1
            self.jobs.clear()
            self.quotas.clear()
            self.faults.clear()
            self.counts.clear()
            self.delete_policies.clear()
            self.requests.clear()
            self.chaos = None
            self.create_code = 201
            self.expire_continues = 0
            self.denials.clear()

    def write_kubeconfig(self, path: Path) -> Path:
        cfg = {
            "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "emulator", "user": {"token": "emulator-token"}}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "emulator"}}],
        }
        path.write_text(json.dumps(cfg))
        return path

    # --- test controls ----------------------------------------------------------------------------------------

    def fail_next(self, n: int, status: int = 500, *, retry_after: float | None = None,
                  verbs: tuple[str, ...] | None = None) -> None:
        """The next `n` matching requests answer `status` (with `Retry-After` when given) and change nothing."""
        self._add(Fault("status", n, verbs_of(verbs), status=status, retry_after=retry_after))

    def slow_next(self, n: int, delay_s: float, *, verbs: tuple[str, ...] | None = None) -> None:
        """The next `n` matching requests wait `delay_s` before they are served (and still take effect)."""
        self._add(Fault("slow", n, verbs_of(verbs), delay_s=delay_s))

    def drop_next(self, n: int, *, after_action: bool = False, verbs: tuple[str, ...] | None = None) -> None:
        """The next `n` matching requests get their connection closed without an answer — before the server acts,
        or (`after_action`) after it acted, like a create whose 201 was lost on the way back."""
        self._add(Fault("drop_after" if after_action else "drop", n, verbs_of(verbs)))

    def _add(self, fault: Fault) -> None:
        with self.lock:
            self.faults.append(fault)

    def take_fault(self, verb: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.matches(verb):
                    fault.remaining -= 1
                    return fault
        chaos = self.chaos
        return chaos.pick(verb) if chaos is not None else None

    def calls(self, verb: str, namespace: str | None = None) -> int:
        with self.lock:
            return sum(n for (v, ns), n in self.counts.items() if v == verb and namespace in (None, ns))

    def objects(self, namespace: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            found = [o for (ns, _), o in sorted(self.jobs.items()) if namespace in (None, ns)]
            return copy.deepcopy(found)

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            obj = self.jobs.get((namespace, name))
            return copy.deepcopy(obj) if obj else None

    def remove(self, namespace: str, name: str) -> None:
        """Delete an object by hand (kubectl delete, a TTL) without counting a request."""
        with self.lock:
            self.jobs.pop((namespace, name), None)

    def relabel(self, namespace: str, name: str, labels: dict[str, str]) -> None:
        """Replace an object's labels by hand (kubectl label --overwrite), without counting a request."""
        with self.lock:
            obj = self.jobs[(namespace, name)]
            obj["metadata"]["labels"] = dict(labels)
            self._bump(obj)

    def put(self, obj: dict[str, Any]) -> None:
        """Store an object made by someone else (another tool, a person), without counting a request."""
        with self.lock:
            self.create(obj["metadata"]["namespace"], copy.deepcopy(obj), by_hand=True)

    # --- the REST API (called by the handler, under the lock) -------------------------------------------------

    def create(self, namespace: str, body: Any, dry_run: bool = False, by_hand: bool = False) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise Reply(400, "BadRequest", "the body is not an object")
        meta = body.setdefault("metadata", {})
        meta.setdefault("namespace", namespace)
        name = meta.get("name", "")
        if meta["namespace"] != namespace:
            raise Reply(400, "BadRequest", "the namespace of the object does not match the namespace on the request")
        problems = pytorchjob_problems(body)
        if problems:
            raise Reply(422, "Invalid", f'PyTorchJob.kubeflow.org "{name}" is invalid: {"; ".join(problems)}')
        if self.denials and not by_hand:
            remaining, code, reason, message = self.denials[0]
            self.denials[0] = (remaining - 1, code, reason, message)
            if remaining <= 1:
                self.denials.pop(0)
            verb = "is forbidden" if code == 403 else "is invalid"
            raise Reply(code, reason, f'PyTorchJob.kubeflow.org "{name}" {verb}: {message}')
        if (namespace, name) in self.jobs:
            raise Reply(409, "AlreadyExists", f'pytorchjobs.kubeflow.org "{name}" already exists')
        body.pop("status", None)
        if dry_run:
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
            return copy.deepcopy(body)
        self.version += 1
        meta.update(uid=str(uuid.uuid4()), resourceVersion=str(self.version), creationTimestamp=now(), generation=1)
        self.jobs[(namespace, name)] = body
        return copy.deepcopy(body)

    def read(self, namespace: str, name: str) -> dict[str, Any]:
        obj = self.jobs.get((namespace, name))
        if obj is None:
            raise Reply(404, "NotFound", f'pytorchjobs.kubeflow.org "{name}" not found')
        return copy.deepcopy(obj)

    def list(self, namespace: str, query: dict[str, str]) -> dict[str, Any]:
        selector = parse_selector(query.get("labelSelector", ""))
        matching = [o for (ns, _), o in sorted(self.jobs.items())
                    if ns == namespace and selector(o["metadata"].get("labels") or {})]
        if query.get("continue") and self.expire_continues > 0:
            self.expire_continues -= 1
            raise Reply(410, "Expired", "The provided continue parameter is too old to display a consistent list "
                                        "result. You can start a new list without the continue parameter.")
        start = decode_continue(query["continue"]) if query.get("continue") else 0
        limit = int(query.get("limit") or 0)
        page = matching[start:start + limit] if limit else matching[start:]
        end = start + len(page)
        meta: dict[str, Any] = {"resourceVersion": str(self.version)}
        if end < len(matching):
            meta["continue"] = base64.urlsafe_b64encode(json.dumps({"start": end}).encode()).decode()
            meta["remainingItemCount"] = len(matching) - end
        return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJobList", "metadata": meta,
                "items": copy.deepcopy(page)}

    def delete(self, namespace: str, name: str, policy: str | None, uid: str | None = None) -> dict[str, Any]:
        obj = self.read(namespace, name)
        if uid is not None and obj["metadata"].get("uid") != uid:
            raise Reply(409, "Conflict", f"Precondition failed: UID in precondition: {uid}, "
                                         f"UID in object meta: {obj['metadata'].get('uid')}")
        self.delete_policies.append(policy)
        del self.jobs[(namespace, name)]
        obj["metadata"]["deletionTimestamp"] = now()
        return obj

    def patch_status(self, namespace: str, name: str, body: Any) -> dict[str, Any]:
        obj = self.jobs.get((namespace, name))
        if obj is None:
            raise Reply(404, "NotFound", f'pytorchjobs.kubeflow.org "{name}" not found')
        if isinstance(body, dict) and isinstance(body.get("status"), dict):
            obj["status"] = merge(obj.get("status") or {}, body["status"])
            self._bump(obj)
        return copy.deepcopy(obj)

    def quota_list(self, namespace: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ResourceQuotaList", "metadata": {"resourceVersion": str(self.version)},
                "items": copy.deepcopy(self.quotas.get(namespace, []))}


def api_client_for(emulator: K8sEmulator) -> Any:
    """An official-client ApiClient pointed at the emulator, built the way the broker builds one (kubeconfig,
    urllib3 retries off)."""
    from kubernetes import client, config

    with tempfile.TemporaryDirectory() as tmp:
        path = emulator.write_kubeconfig(Path(tmp) / "kubeconfig")
        configuration = client.Configuration()
        config.load_kube_config(config_file=str(path), client_configuration=configuration)
    configuration.retries = False
    return client.ApiClient(configuration)
