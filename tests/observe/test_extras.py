"""The core and the command line import without the observability extras; the
adapters say which extra they need."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
BLOCKED = ["prometheus_client", "opentelemetry", "limits"]

SCRIPT = textwrap.dedent(
    """
    import importlib, sys
    for name in sys.argv[2:]:
        sys.modules[name] = None
    importlib.import_module(sys.argv[1])
    print("imported", sys.argv[1])
    """
)


def run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SCRIPT, module, *BLOCKED], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("module", ["kitsd.sd", "kitsd.core.observe", "kitsd.lb", "kitsd.breaker",
                                    "kitsd.cli", "kitsd.log_middleware"])
def test_imports_without_the_extras(module: str) -> None:
    result = run(module)
    assert result.returncode == 0, result.stderr
    assert f"imported {module}" in result.stdout


@pytest.mark.parametrize(("module", "extra", "library"), [
    ("kitsd.prometheus", "prometheus", "prometheus_client"),
    ("kitsd.otel", "otel", "opentelemetry"),
    ("kitsd.ratelimit", "ratelimit", "limits"),
])
def test_adapters_say_which_extra_to_install(module: str, extra: str, library: str) -> None:
    result = run(module)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last == (f"ModuleNotFoundError: {module} needs {library}, which is not installed: "
                    f"pip install 'kitsd[{extra}]'"), result.stderr


def test_demo_metrics_without_prometheus_client_says_what_to_install() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["prometheus_client"] = None
        from kitsd.cli import main
        sys.exit(main(["demo", "--metrics"]))
        """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "kitsd[prometheus]" in result.stderr
