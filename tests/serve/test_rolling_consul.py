"""Rolling restart of uvicorn instances registered in a real Consul agent."""

from __future__ import annotations

from typing import Any

import pytest

from tests.serve.rolling import prove

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_rolling_restart_through_consul(kitsd_consul: Any,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    prove(f"consul://{kitsd_consul.http_addr}", capsys)
