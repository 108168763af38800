"""Without grpcio, importing sd.grpc says which extra to install; the core still imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
sys.modules["grpc"] = None
import kitsd, sd, lb  # the core, and the transport, need no grpcio
try:
    import kitsd.sd.grpc
    from kitsd import sd
except ImportError as error:
    print(error)
"""


def test_import_error_names_the_extra() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=True)
    assert "pip install 'kitsd[grpc]'" in result.stdout
