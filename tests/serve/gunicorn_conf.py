"""gunicorn config for the serving tests: KITSD_TEST_PORT, KITSD_TEST_LOG, KITSD_TEST_MARGIN."""

from __future__ import annotations

import os
from pathlib import Path

import kitsd.serve
from tests.serve.app import FileRegistrar

_port = int(os.environ["KITSD_TEST_PORT"])
bind = f"127.0.0.1:{_port}"
workers = 2
graceful_timeout = 10
loglevel = "warning"

hooks = kitsd.serve.gunicorn_hooks(
    lambda: FileRegistrar(Path(os.environ["KITSD_TEST_LOG"]), f"127.0.0.1:{_port}"),
    drain=float(os.environ.get("KITSD_TEST_DRAIN", "10")),
    margin=float(os.environ.get("KITSD_TEST_MARGIN", "1")))
globals().update(hooks.as_config())
