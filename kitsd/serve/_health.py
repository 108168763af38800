"""The health route's answer, free of I/O: one rule for ASGI, WSGI and plain asyncio.

==========================  ======  ==============================================
state                       status  why
==========================  ======  ==============================================
draining (a signal came)    503     callers and registry checks stop choosing it
the app's check fails       503     not ready (or no longer healthy)
otherwise                   200     also while not yet registered: the self-check
                                    that gates registration GETs this route
==========================  ======  ==============================================

The body is JSON: ``{"status": "<phase>", "registered": true|false}`` — readiness
says whether the registry lists the instance yet.  A 503 while draining carries
:data:`DRAINING_HEADER` (so a caller knows the instance is leaving, not failing:
it retries elsewhere without counting it against the instance) and
``Connection: close``.
"""

from __future__ import annotations

import json

__all__ = ["DRAINING_HEADER", "health_answer"]

#: Response header of a draining instance's 503s (the value is ``1``).  The caller
#: side (``kitsd.Transport``) reads the same name.
DRAINING_HEADER = "kitsd-draining"


def health_answer(
    phase: str, *, draining: bool, registered: bool, check_ok: bool
) -> tuple[int, list[tuple[str, str]], bytes]:
    """``(status, headers, body)`` of the health route in this state."""
    body = json.dumps({"status": phase, "registered": registered}).encode()
    headers = [("content-type", "application/json"), ("content-length", str(len(body))),
               ("cache-control", "no-store")]
    if draining:
        headers += [(DRAINING_HEADER, "1"), ("connection", "close")]
        return 503, headers, body
    return (200 if check_ok else 503), headers, body
