"""The published package: one top-level name, a license, metadata that looks finished,
no development tools in it, and an sdist that builds the same wheel.

The wheel and the sdist are built once per run (``python -m build``: the sdist, then the
wheel from the sdist, in isolated build environments; the build backend comes from the
package index or pip's cache) from a copy of this checkout, so the checkout stays clean.

Decision: the sdist ships no test tree.  The suite runs from the repository (it needs the
real servers, the README, the compose files and ``.ci``); the sdist holds what builds the
wheel, and building the wheel from it gives the same files as building from the checkout.
"""

from __future__ import annotations

import email.parser
import email.policy
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

import kitsd

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

#: What a user's install must never pull in (they are in requirements-dev.txt).
DEVELOPMENT_TOOLS = {"mypy", "ruff", "pytest-asyncio", "pytest-timeout", "build",
                     "opentelemetry-sdk", "starlette", "gunicorn"}


@dataclass(frozen=True)
class Dist:
    wheel: Path
    sdist: Path
    direct_wheel: Path  # built from the checkout, not from the sdist


def _copy_checkout(target: Path) -> Path:
    """The checkout's files (symlinks kept) without build leftovers and caches."""
    ignore = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__",
                                    ".mypy_cache", ".ruff_cache", ".pytest_cache", ".venv")
    shutil.copytree(ROOT, target, symlinks=True, ignore=ignore)
    return target


def _build(source: Path, out: Path, *args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), *args,
                             str(source)], capture_output=True, text=True, timeout=600,
                            check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    base = tmp_path_factory.mktemp("packaging")
    source = _copy_checkout(base / "src")
    _build(source, base / "dist")  # the sdist, then the wheel built from the sdist
    _build(source, base / "direct", "--wheel")
    (wheel,) = (base / "dist").glob("*.whl")
    (sdist,) = (base / "dist").glob("*.tar.gz")
    (direct,) = (base / "direct").glob("*.whl")
    return Dist(wheel, sdist, direct)


def _metadata(wheel: Path) -> email.message.EmailMessage:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(name).decode()
    return email.parser.Parser(policy=email.policy.compat32).parsestr(text)  # type: ignore[return-value]


def test_the_wheel_installs_exactly_one_top_level_name(dist: Dist, tmp_path: Path) -> None:
    with zipfile.ZipFile(dist.wheel) as archive:
        names = archive.namelist()
    assert {name.split("/")[0] for name in names} == {
        "kitsd", f"kitsd-{kitsd.__version__}.dist-info"}
    # and installed, that is what lands in site-packages
    target = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                             "--disable-pip-version-check", "--target", str(target),
                             str(dist.wheel)], capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in target.iterdir() if p.name != "bin") == [
        "kitsd", f"kitsd-{kitsd.__version__}.dist-info"]
    for package in ("sd", "lb", "breaker", "compose", "core"):
        assert (target / "kitsd" / package / "__init__.py").is_file(), package


def test_the_wheel_carries_the_license_data_files_and_types(dist: Dist) -> None:
    with zipfile.ZipFile(dist.wheel) as archive:
        names = set(archive.namelist())
        license_text = archive.read(
            f"kitsd-{kitsd.__version__}.dist-info/licenses/LICENSE").decode()
    assert license_text.startswith("MIT License")
    assert "kitsd/py.typed" in names
    for server in ("consul", "etcd", "zookeeper"):  # kitsd servers install NAME, from a wheel
        assert f"kitsd/compose/installers/{server}.sh" in names
    assert {"kitsd/compose/etcd.yaml", "kitsd/compose/consul.yaml",
            "kitsd/compose/demo.yaml"} <= names


def test_the_metadata_looks_finished(dist: Dist) -> None:
    meta = _metadata(dist.wheel)
    assert meta["Name"] == "kitsd"
    assert meta["Version"] == kitsd.__version__
    assert meta["License-Expression"] == "MIT"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert not any(c.startswith("License ::") for c in meta.get_all("Classifier", []))
    classifiers = set(meta.get_all("Classifier", []))
    assert {"Typing :: Typed", "Framework :: AsyncIO", "Programming Language :: Python :: 3.11",
            "Programming Language :: Python :: 3 :: Only"} <= classifiers
    assert meta["Requires-Python"] == ">=3.11"


def test_development_tools_are_not_published(dist: Dist) -> None:
    meta = _metadata(dist.wheel)
    extras = set(meta.get_all("Provides-Extra", []))
    assert "dev" not in extras
    required = [re.split(r"[ ;<>=!~\[]", r, maxsplit=1)[0].lower()
                for r in meta.get_all("Requires-Dist", [])]
    assert not DEVELOPMENT_TOOLS & set(required), required
    # ... they are where a contributor gets them, with kitsd and every extra
    dev = (ROOT / "requirements-dev.txt").read_text()
    assert re.search(r"^-e \.\[all,testing\]$", dev, re.MULTILINE)
    listed = {re.split(r"[ <>=!~\[#]", line, maxsplit=1)[0].lower()
              for line in dev.splitlines() if line and not line.startswith(("#", "-"))}
    assert listed >= DEVELOPMENT_TOOLS


def test_the_all_extra_names_every_extra_but_testing() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    (all_,) = extras["all"]
    named = set(re.fullmatch(r"kitsd\[(.*)\]", all_).group(1).split(","))  # type: ignore[union-attr]
    assert named == set(extras) - {"all", "testing"}


def test_the_readme_names_every_extra() -> None:
    """The README's list of extras for a user's install (it missed ``auth``)."""
    text = " ".join((ROOT / "README.md").read_text().split())
    listed = re.search(r"extras: (.*?) for the pytest plugin\)", text)
    assert listed is not None
    named = set(re.findall(r"`([a-z0-9]+)`", listed.group(1)))
    assert named == set(PYPROJECT["project"]["optional-dependencies"]) - {"all"}


def test_the_sdist_builds_the_same_wheel_and_ships_no_test_tree(dist: Dist) -> None:
    with tarfile.open(dist.sdist) as archive:
        members = {m.name.split("/", 1)[1] for m in archive.getmembers() if "/" in m.name}
    assert {"LICENSE", "README.md", "pyproject.toml", "PKG-INFO"} <= members
    assert not [m for m in members if m.startswith(("tests/", "bench/"))]
    with zipfile.ZipFile(dist.wheel) as from_sdist, zipfile.ZipFile(dist.direct_wheel) as direct:
        assert sorted(from_sdist.namelist()) == sorted(direct.namelist())


def test_help_kitsd_shows_where_to_start() -> None:
    """``help(kitsd)`` listed four modules and ``__getattr__``: no way in for a newcomer."""
    import pydoc

    text = pydoc.plain(pydoc.render_doc(kitsd))
    for wanted in ('kitsd.Transport("consul://127.0.0.1:8500/{service}")', "kitsd.serve",
                   "kitsd demo", "kitsd servers install", "pip install 'kitsd[testing]'",
                   "imported on first use"):
        assert wanted in text, wanted


@pytest.mark.integration
@pytest.mark.kitsd_servers("etcd", "consul", "zookeeper", "kube-apiserver")
@pytest.mark.timeout(1500)
def test_the_wheel_passes_a_newcomers_script() -> None:
    """Issue 15's "Done when": the wheel, installed on its own in a new virtual
    environment, passes a newcomer's script (``.ci/newcomer_proof.py``: demo, watch
    against a real etcd, the first hour's errors, every README example with only what
    it says to install, the plugin's fixtures).  Needs the package index or pip's cache."""
    done = subprocess.run([sys.executable, str(ROOT / ".ci" / "newcomer_proof.py")],
                          capture_output=True, text=True, timeout=1400, check=False,
                          cwd=ROOT)
    assert done.returncode == 0, done.stdout[-12000:] + done.stderr[-3000:]
    assert "ALL HOLD" in done.stdout
    assert "FAIL" not in done.stdout


def test_version_has_one_source() -> None:
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "kitsd.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]|rc)?\d*", kitsd.__version__)
    result = subprocess.run([sys.executable, "-m", "kitsd", "--version"], capture_output=True,
                            text=True, timeout=60, check=True, cwd=ROOT)
    assert result.stdout.strip() == f"kitsd {kitsd.__version__}"
