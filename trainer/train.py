"""The torchrun entrypoint: `torchrun ... train.py --framework F --run-id R ... [--key value ...]`.

Thin on purpose: parse -> build the run context -> dispatch to the framework's runner -> close. Works as a script
path (`torchrun ... /path/to/trainer/train.py`, with the `trainer` package installed or on PYTHONPATH) and as
`python -m trainer`. Exit status: 0 done, 2 invalid settings or dataset (one line on stderr), 1 anything else.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from trainer.config import ConfigError, parse_config
from trainer.data import DatasetError
from trainer.failure import ERROR, INVALID_INPUT, TERMINATED, logs_uri_from_env, record_failure
from trainer.host_memory import configure_malloc

RUNNERS = {"hf": "trainer.runners.hf", "nemo": "trainer.runners.nemo", "meta": "trainer.runners.meta"}
INPUT_ERRORS = (ConfigError, DatasetError)


def load_runner(framework: str) -> Any:
    """The runner module for `framework` (imported lazily: heavy imports live in the runners)."""
    return importlib.import_module(RUNNERS[framework])


def main(argv: Sequence[str] | None = None) -> int:
    configure_malloc()  # before the first tensor: freed tensor memory goes back to the OS (trainer.host_memory)
    try:
        config = parse_config(argv, os.environ)
    except ConfigError as exc:
        print(f"train.py: invalid settings: {exc}", file=sys.stderr)
        record_failure(INVALID_INPUT, f"invalid settings: {exc}", logs_uri_from_env(os.environ), os.environ)
        return 2
    from trainer.context import build_context, close_context

    signal.signal(signal.SIGTERM, _terminate)  # pod deletion / cancel: unwind so the final flush runs
    try:
        ctx = build_context(config)
    except INPUT_ERRORS as exc:
        print(f"train.py: {exc}", file=sys.stderr)
        record_failure(INVALID_INPUT, str(exc), config.logs_uri, os.environ)
        return 2
    except Terminated:
        record_failure(TERMINATED, "terminated by SIGTERM while starting", config.logs_uri, os.environ)
        raise
    except BaseException as exc:
        record_failure(ERROR, f"failed to start: {exc!r}", config.logs_uri, os.environ)
        raise
    state = "failed"
    input_error: Exception | None = None
    try:
        load_runner(config.framework).run(ctx)
        state = "completed"
    except INPUT_ERRORS as exc:
        ctx.logger.error("%s", exc)
        input_error = exc
    except Terminated:
        ctx.logger.warning("terminated by SIGTERM: flushing uploads before exit")
        state = "terminated"
        record_failure(TERMINATED, "terminated by SIGTERM", config.logs_uri, os.environ)
        raise
    except BaseException as exc:
        ctx.logger.exception("training failed")
        record_failure(ERROR, f"training failed: {exc!r}", config.logs_uri, os.environ)
        raise
    finally:
        close_context(ctx, state == "completed", state)
    if input_error is not None:
        print(f"train.py: {input_error}", file=sys.stderr)  # the last line, after the closing log lines
        record_failure(INVALID_INPUT, str(input_error), config.logs_uri, os.environ)
        return 2
    return 0


class Terminated(SystemExit):
    """SIGTERM arrived (job cancelled or pod deleted): unwind, flush, exit 128 + 15."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
