"""The Kubernetes backend: `kubeflow.org/v1` PyTorchJobs through the official `kubernetes` client.

This module is the boundary: every exception the client library raises (`ApiException`, urllib3's connection and
timeout errors) is translated here, once, into `broker.backends.errors`, keeping the HTTP status, the Status
`reason`, the server's message and `Retry-After`. Nothing above this module imports `kubernetes`.

It never retries by itself (urllib3's own retries are switched off): the broker's one retry loop
(`broker.retry`) decides, so a 429's `Retry-After` is honoured in one place and the API server sees each try once.
Configuration: in-cluster service account when running in a pod, else `KUBECONFIG` / `~/.kube/config`, or an
explicit `ApiClient` (tests).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Collection, Iterator
from decimal import Decimal
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.utils.quantity import parse_quantity

from broker.backends import errors
from broker.backends.base import PyTorchJob, status_view

GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "pytorchjobs"
GPU_QUOTA_KEYS = ("requests.nvidia.com/gpu", "nvidia.com/gpu")

JobList = list[PyTorchJob]
log = logging.getLogger(__name__)


class Expired(errors.PermanentClusterError):
    """410 Gone: a LIST's continue token (resourceVersion) expired; the LIST must start again."""


def load_api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """An ApiClient from the in-cluster service account, else the kubeconfig (`kubeconfig`, else
    `~/.kube/config`). Raises ClusterError if neither."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except ConfigException:
        try:
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        except (ConfigException, OSError) as exc:
            raise errors.ClusterError(f"no Kubernetes configuration (in-cluster or KUBECONFIG): {exc}") from exc
    configuration.retries = False
    return client.ApiClient(configuration)


class KubernetesBackend:
    """`ClusterBackend` over the Kubernetes API. Thread-safe as the client is; create one per process."""

    def __init__(
        self,
        api_client: client.ApiClient | None = None,
        *,
        kubeconfig: str | None = None,
        timeout_s: float = 30.0,
        page_size: int = 500,
    ) -> None:
        self.api_client = api_client or load_api_client(kubeconfig)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.core = client.CoreV1Api(self.api_client)
        self.timeout = (min(timeout_s, 10.0), timeout_s)
        self.page_size = page_size

    def create(self, job: PyTorchJob) -> PyTorchJob:
        meta = job["metadata"]
        with translated(f"create PyTorchJob {meta['namespace']}/{meta['name']}"):
            created = self.custom.create_namespaced_custom_object(
                GROUP, VERSION, meta["namespace"], PLURAL, job, _request_timeout=self.timeout
            )
        if created is None:
            # The official client decodes a create's body only on 201; a server answering 200 yields None.
            stored = self.get(meta["namespace"], meta["name"])
            if stored is None:
                raise errors.ServerError(f"created PyTorchJob {meta['name']} but could not read it back")
            return stored
        return _as_dict(created)

    def validate(self, job: PyTorchJob) -> PyTorchJob:
        """A create with `dryRun=All`: admission (schema, webhooks, policies) runs, nothing is stored."""
        meta = job["metadata"]
        with translated(f"dry-run create PyTorchJob {meta['namespace']}/{meta['name']}"):
            checked = self.custom.create_namespaced_custom_object(
                GROUP, VERSION, meta["namespace"], PLURAL, job, dry_run="All", _request_timeout=self.timeout
            )
        return _as_dict(checked) if checked is not None else job

    def get(self, namespace: str, name: str) -> PyTorchJob | None:
        try:
            with translated(f"get PyTorchJob {namespace}/{name}"):
                found = self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name, _request_timeout=self.timeout
                )
        except errors.NotFound:
            return None
        return _as_dict(found)

    def list(self, namespace: str, label_selector: str, only: Collection[str] | None = None) -> JobList:
        """All pages of the LIST; a continue token that expired (410) restarts the LIST once."""
        try:
            return self._list_pages(namespace, label_selector, only)
        except Expired:
            return self._list_pages(namespace, label_selector, only)

    def _list_pages(self, namespace: str, label_selector: str, only: Collection[str] | None) -> JobList:
        items: JobList = []
        token: str | None = None
        while True:
            with translated(f"list PyTorchJobs in {namespace}"):
                page = self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, label_selector=label_selector, limit=self.page_size,
                    _continue=token, _request_timeout=self.timeout,
                )
            body = _as_dict(page)
            items.extend(status_view(item) for item in body.get("items") or []  # page by page: specs dropped
                         if only is None or (item.get("metadata") or {}).get("name") in only)
            token = (body.get("metadata") or {}).get("continue") or None
            if not token:
                return items

    def delete(self, namespace: str, name: str, uid: str | None = None) -> bool:
        """Delete with background propagation; with `uid`, only that object (the API server checks the
        precondition and answers 409 for another object of the same name)."""
        body = client.V1DeleteOptions(propagation_policy="Background",
                                      preconditions=client.V1Preconditions(uid=uid) if uid else None)
        try:
            with translated(f"delete PyTorchJob {namespace}/{name}"):
                self.custom.delete_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Background", body=body,
                    _request_timeout=self.timeout,
                )
        except errors.NotFound:
            return False
        return True

    def gpu_quota_free(self, namespace: str) -> int | None:
        """The tightest `hard − used` of GPU requests over the namespace's ResourceQuotas; None without any."""
        with translated(f"list ResourceQuotas in {namespace}"):
            quotas = self.core.list_namespaced_resource_quota(namespace, _request_timeout=self.timeout)
        free: Decimal | None = None
        for quota in quotas.items or []:
            status = quota.status
            hard = (status.hard if status and status.hard else None) or (quota.spec.hard if quota.spec else None)
            used = (status.used if status else None) or {}
            for key in GPU_QUOTA_KEYS:
                if hard and key in hard:
                    left = parse_quantity(hard[key]) - parse_quantity(used.get(key, "0"))
                    free = left if free is None else min(free, left)
        return None if free is None else max(int(free), 0)


def _as_dict(answer: object) -> dict[str, Any]:
    if not isinstance(answer, dict):
        raise errors.ServerError(f"the API server answered {type(answer).__name__}, not an object")
    return answer


@contextlib.contextmanager
def translated(action: str) -> Iterator[None]:
    """Run one client call; re-raise its failure as the product's typed error (`from` the original)."""
    try:
        yield
    except ApiException as exc:
        raise from_api_exception(exc, action) from exc
    except urllib3.exceptions.TimeoutError as exc:
        log.warning("%s: timed out: %s", action, exc)
        raise errors.Unreachable(f"{action}: timed out") from exc
    except (urllib3.exceptions.HTTPError, ConnectionError, OSError) as exc:
        # The client's message names the API server's address: logged, never put in a job's detail.
        log.warning("%s: no answer from the API server: %s", action, exc)
        raise errors.Unreachable(f"{action}: no answer from the API server") from exc


def from_api_exception(exc: ApiException, action: str) -> errors.ClusterError:
    """The typed error for an HTTP error answer (status, Status reason, message, Retry-After)."""
    status = int(exc.status or 0)
    reason, message = _status_body(exc)
    text = f"{action}: {status} {reason or exc.reason}: {message}".rstrip(": ")
    retry_after = _retry_after(exc)
    if status == 429:
        return errors.Throttled(text, status=status, retry_after=retry_after)
    if status >= 500 or status == 0:
        return errors.ServerError(text, status=status, retry_after=retry_after)
    if status == 409:
        kind = errors.AlreadyExists if reason == "AlreadyExists" else errors.Conflict
        return kind(text, status=status)
    by_status: dict[int, type[errors.ClusterError]] = {
        400: errors.Invalid, 422: errors.Invalid, 401: errors.Forbidden, 403: errors.Forbidden,
        404: errors.NotFound, 410: Expired,
    }
    return by_status.get(status, errors.PermanentClusterError)(text, status=status)


def _status_body(exc: ApiException) -> tuple[str, str]:
    """`(reason, message)` from a `kind: Status` body; the raw body when it is not one."""
    try:
        body: Any = json.loads(exc.body or "")
    except ValueError:
        return "", (exc.body or "").strip()[:500]
    if not isinstance(body, dict):
        return "", str(body)[:500]
    return str(body.get("reason") or ""), str(body.get("message") or "")


def _retry_after(exc: ApiException) -> float | None:
    raw = (exc.headers or {}).get("Retry-After")
    try:
        return max(float(raw), 0.0) if raw is not None else None
    except ValueError:
        return None
