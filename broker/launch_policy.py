"""What a request may put into a launch, on every backend: environment names, literal values, the replica's env.

- **Request env is an allow-list by pattern** (`fnmatch` patterns, `TRAINER_ENV_ALLOW`). On top of it, names that
  change how interpreters, loaders or the shell behave, and every name the system itself sets, are refused whatever
  the patterns say (`refused_env`): an operator cannot allow `PYTHONSTARTUP` or `LD_PRELOAD` by accident.
- **Values are literal.** Kubernetes expands `$(VAR)` in a container's command, args and env values; every value
  that reaches the PyTorchJob is escaped (`$` → `$$`) so the trainer receives exactly what was sent.
- **The local backend's replicas get a minimal environment** (`replica_base_env`): a few harmless names of the
  worker's own environment plus those the operator names in `TRAINER_LOCAL_REPLICA_ENV`; never its secrets.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping

from broker.jobs import is_reserved_env

#: Request env names allowed when `TRAINER_ENV_ALLOW` is not set.
DEFAULT_ENV_ALLOW: tuple[str, ...] = (
    "HF_HOME", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_ENABLE_HF_TRANSFER", "TRANSFORMERS_OFFLINE",
    "TRANSFORMERS_VERBOSITY", "TOKENIZERS_PARALLELISM", "WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY",
    "WANDB_RUN_GROUP", "WANDB_TAGS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NCCL_DEBUG", "NCCL_DEBUG_SUBSYS",
    "NCCL_SOCKET_IFNAME", "NCCL_IB_DISABLE", "NCCL_P2P_DISABLE", "NCCL_ASYNC_ERROR_HANDLING",
    "TORCH_NCCL_ASYNC_ERROR_HANDLING", "TORCH_DISTRIBUTED_DEBUG", "CUDA_LAUNCH_BLOCKING", "APP_*", "USER_*",
)

#: Never accepted from a request, whatever `TRAINER_ENV_ALLOW` says: interpreter, loader, shell, locale, TLS and
#: proxy settings, cloud and cluster credentials, and the service's own variables.
_ALWAYS_REFUSED = (
    "PYTHON*", "LD_*", "DYLD_*", "PATH", "BROWSER", "PERL*", "RUBY*", "NODE_*", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS",
    "BASH_*", "ENV", "SHELL", "SHELLOPTS", "PS4", "IFS", "CDPATH", "HOME", "TMPDIR", "GCONV_PATH", "LOCPATH",
    "NLSPATH", "MALLOC_*", "GLIBC_TUNABLES", "LANG", "LC_*", "TZ", "SSL_*", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "*_PROXY", "AWS_*", "GOOGLE_*", "AZURE_*", "KUBERNETES_*", "KUBECONFIG", "TRAINER_*", "CELERY_*", "REDIS_*",
    "FLOWER_*", "TORCHELASTIC_*", "GROUP_RANK", "ROLE_RANK", "LOCAL_WORLD_SIZE", "ROLE_WORLD_SIZE", "GROUP_WORLD_SIZE",
    "CUDA_VISIBLE_DEVICES", "NVIDIA_*", "NCCL_NET_PLUGIN", "NCCL_TOPO_FILE", "NCCL_GRAPH_FILE", "NCCL_CONF_FILE",
    "GIT_*", "EDITOR", "VISUAL", "PAGER", "TERMINFO", "HOSTALIASES", "RES_OPTIONS",
)

#: The worker's own variables every local replica inherits (when set): none of them is a secret.
LOCAL_BASE_ENV: tuple[str, ...] = (
    "PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV", "HF_HOME",
    "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM", "OMP_NUM_THREADS",
)


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def refused_env(name: str, allow: Iterable[str] = DEFAULT_ENV_ALLOW) -> str | None:
    """Why a request may not set `name` (None: it may). Names are compared upper-cased."""
    upper = name.upper()
    if is_reserved_env(upper) or _matches(upper, _ALWAYS_REFUSED):
        return "is set by the system or changes how the interpreter, loader or shell behaves; it cannot be set"
    if not _matches(upper, allow):
        return "is not an allowed environment variable (see TRAINER_ENV_ALLOW)"
    return None


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_env_allow(raw: str | None) -> tuple[str, ...]:
    """`TRAINER_ENV_ALLOW`: comma-separated names or patterns (`*` and `?`); unset or empty keeps the default."""
    items = tuple(p.strip().upper() for p in (raw or "").split(",") if p.strip())
    return items or DEFAULT_ENV_ALLOW


def literal(value: str) -> str:
    """`value` as Kubernetes passes it through unchanged: every `$` doubled, so no `$(VAR)` is ever expanded."""
    return value.replace("$", "$$")


def replica_base_env(environ: Mapping[str, str], passed: Iterable[str] = ()) -> dict[str, str]:
    """What a local replica inherits of the worker's environment: `LOCAL_BASE_ENV` plus the operator's `passed`
    names or patterns (`TRAINER_LOCAL_REPLICA_ENV`, e.g. a development S3's endpoint and keys)."""
    wanted = (*LOCAL_BASE_ENV, *passed)
    return {k: v for k, v in environ.items() if _ENV_NAME.match(k) and _matches(k, wanted)}
