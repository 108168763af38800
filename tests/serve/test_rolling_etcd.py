"""Rolling restart of uvicorn instances registered in a real etcd."""

from __future__ import annotations

from typing import Any

import pytest

from tests.serve.rolling import prove

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_rolling_restart_through_etcd(kitsd_etcd: Any,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    prove(f"etcd://{kitsd_etcd.endpoint}", capsys)
