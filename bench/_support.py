"""Shared parts of the benchmarks: a Redis client that counts round trips, a populated cluster emulator and store,
and the throwaway servers (Redis, emulator) every broker benchmark runs against."""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import redis

from broker.backends.kubernetes import KubernetesBackend
from broker.context import BrokerContext
from broker.jobs import JobStatus
from broker.keys import member
from broker.quota import QuotaLedger
from broker.render import render_pytorchjob
from broker.settings import BrokerSettings, Quota
from broker.store import Change, JobStore
from devstack import RedisServer
from tests.support.jobs import make_record
from tests.support.k8s_emulator import K8sEmulator


class CountingConnection(redis.Connection):
    """A redis-py connection that counts what it sends: one per command, one per pipeline `execute`."""

    sent: ClassVar[int] = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        super().send_packed_command(command, check_health)


def counting_client(url: str) -> redis.Redis:
    pool = redis.ConnectionPool.from_url(url, connection_class=CountingConnection, decode_responses=True)
    return redis.Redis(connection_pool=pool)


@dataclasses.dataclass
class Cluster:
    """A throwaway Redis, the Kubernetes API emulator and a broker context on both (Redis round trips counted)."""

    redis_server: RedisServer
    emulator: K8sEmulator
    kubeconfig: Path
    ctx: BrokerContext


@contextlib.contextmanager
def cluster(page_size: int = 500) -> Iterator[Cluster]:
    redis_server, emulator = RedisServer().start(), K8sEmulator().start()
    try:
        kubeconfig = emulator.write_kubeconfig(Path(tempfile.mkdtemp(prefix="tb-bench-")) / "kubeconfig")
        settings = BrokerSettings(redis_url=redis_server.url(0), cluster_backend="kubernetes",
                                  kubeconfig=str(kubeconfig), kube_list_page_size=page_size,
                                  quotas={"default": Quota(gpus=10**9, jobs=10**9)})
        backend = KubernetesBackend(kubeconfig=str(kubeconfig), page_size=page_size)
        client = counting_client(settings.redis_url)
        ctx = BrokerContext(settings, JobStore(client, settings.key_prefix),
                            QuotaLedger(client, settings.key_prefix), backend, enqueue=lambda task, name: None)
        yield Cluster(redis_server, emulator, kubeconfig, ctx)
    finally:
        emulator.stop()
        redis_server.stop()


def populate_running(c: Cluster, count: int, namespaces: int, tag: str) -> list[str]:
    """`count` jobs spread over `namespaces`, each `submitted` in the store with its quota reservation held and its
    PyTorchJob Running in the emulator (put into the emulator's store directly: building the cluster side is not
    what is measured)."""
    ctx, emulator = c.ctx, c.emulator
    records = [make_record(f"{tag}-{i}", namespace=f"team-{i % namespaces}") for i in range(count)]
    for record in records:
        ctx.store.create(record)
    for to in (JobStatus.ADMITTED, JobStatus.SUBMITTED):
        for start in range(0, count, 2000):
            batch = [Change(r.name, to, "bench", fields={"cluster_object": r.object_name()} if to == "submitted"
                            else {}) for r in records[start:start + 2000]]
            ctx.store.transition_many(batch)
    pipe = ctx.redis.pipeline(transaction=False)
    for record in records:
        pipe.hset(ctx.keys.quota(record.namespace)[0], member(record.name, 1),
                  record.spec.num_nodes * record.spec.gpus_per_node)
    pipe.sadd(ctx.keys.quota_namespaces, *{r.namespace for r in records})
    pipe.execute()
    with emulator.lock:
        for record in records:
            body = render_pytorchjob(record, ctx.settings)
            emulator.create(record.namespace, body)
    for record in records:
        emulator.set_condition(record.namespace, record.object_name(), "Running")
    return [r.name for r in records]
