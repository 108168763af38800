"""``import sd.dns`` works without dnspython; using it says how to install it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["dns"] = None  # as on a machine without dnspython
    import kitsd.sd.dns
    import kitsd.sd.dns.url
    from kitsd import sd
    try:
        sd.instancer_from_url("dnssrv://_a._tcp.example?server=127.0.0.1")
    except sd.MisuseError as error:
        print("refused:", error)
    assert sys.modules["dns"] is None
    """
)


def test_import_without_dnspython_and_a_helpful_url_error() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "pip install 'kitsd[dns]'" in result.stdout
