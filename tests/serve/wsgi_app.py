"""A WSGI app under gunicorn for the serving tests (see gunicorn_conf.py beside it)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import kitsd.serve


def _work(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("content-type", "text/plain")])
    return [b"ok"]


app = kitsd.serve.wsgi(_work)
