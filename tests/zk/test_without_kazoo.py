"""``import sd.zk`` works without kazoo; using it says how to install it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["kazoo"] = None  # as on a machine without kazoo
    import kitsd.sd.zk
    import kitsd.sd.zk.url
    from kitsd import sd
    try:
        sd.instancer_from_url("zk://127.0.0.1/services")
    except sd.MisuseError as error:
        print("refused:", error)
    assert sys.modules["kazoo"] is None
    """
)


def test_import_without_kazoo_and_a_helpful_url_error() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "pip install 'kitsd[zk]'" in result.stdout
