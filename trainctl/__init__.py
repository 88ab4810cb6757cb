"""trainctl: the Training Broker's client — a typed Python SDK (`trainctl.Client`) and the `trainctl` CLI on it."""

from trainctl.client import (
    ApiRefused,
    ApiUnreachable,
    Client,
    ClientSettings,
    DryRun,
    Job,
    JobPage,
    Queue,
    TrainerError,
    WaitTimeout,
)

__all__ = ["ApiRefused", "ApiUnreachable", "Client", "ClientSettings", "DryRun", "Job", "JobPage", "Queue",
           "TrainerError", "WaitTimeout"]
