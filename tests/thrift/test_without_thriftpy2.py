"""Without thriftpy2, importing sd.thrift says which extra to install; the rest imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
sys.modules["thriftpy2"] = None
import kitsd
from kitsd import sd, lb
try:
    sd.thrift
except ImportError as error:
    print(error)
"""


def test_import_error_names_the_extra() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=True)
    assert "pip install 'kitsd[thrift]'" in result.stdout
