"""Without PyJWT, kitsd.auth still imports (OAuth2, Basic, mTLS need no JWT library)
and JWTSigner says which extra to install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
sys.modules["jwt"] = None
from kitsd import auth
auth.ClientCredentials("http://oauth/token", "id", "secret").close()
try:
    auth.JWTSigner
except ImportError as error:
    print(error)
"""


def test_import_error_names_the_extra() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=True)
    assert "pip install 'kitsd[auth]'" in result.stdout
