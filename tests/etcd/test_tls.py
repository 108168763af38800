"""etcd over TLS with client certificates, from code and through ``etcd://...?ca=`` URLs
(issue 7.10), against a member of our own started with certificates the test generates."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from kitsd import sd
from kitsd.compose.etcd import EtcdCluster, EtcdMember, TLSFiles
from kitsd.core.errors import MisuseError, RegistryUnavailableError
from tests.etcd.conftest import require_etcd_binary
from tests.helpers import WatchProcess, wait_for

pytest.importorskip("pyetcd")

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls_etcd() -> Iterator[EtcdMember]:
    require_etcd_binary()
    with EtcdCluster(1, tls=True) as cluster:
        yield cluster.members[0]


@pytest.fixture
def tls(tls_etcd: EtcdMember) -> TLSFiles:
    assert tls_etcd.tls is not None
    return tls_etcd.tls


@pytest.fixture
def tls_client(tls_etcd: EtcdMember, tls: TLSFiles) -> Iterator[Any]:
    made = sd.etcd.connect(tls_etcd.host, tls_etcd.client_port, ca_cert=str(tls.ca),
                           cert_cert=str(tls.client_cert), cert_key=str(tls.client_key))
    yield made
    made.close()


def url_of(member: EtcdMember, files: TLSFiles, prefix: str, scheme: str = "etcd") -> str:
    return (f"{scheme}://{member.endpoint}{prefix}?ca={files.ca}&cert={files.client_cert}"
            f"&key={files.client_key}")


def test_a_url_with_ca_cert_and_key_watches_a_tls_etcd(
    no_thread_leaks: None, tls_etcd: EtcdMember, tls: TLSFiles, tls_client: Any
) -> None:
    tls_client.put("/tls/a", "10.0.0.1:80")
    with sd.instancer_from_url(url_of(tls_etcd, tls, "/tls/")) as instancer:
        wait_for(lambda: instancer.state.instances == ("10.0.0.1:80",)
                 and instancer.state.error is None, 10, "a read over TLS")
        tls_client.put("/tls/b", "10.0.0.2:80")
        wait_for(lambda: instancer.state.instances == ("10.0.0.1:80", "10.0.0.2:80"), 5,
                 "a watch over TLS")
    tls_client.delete("/tls/b")


def test_the_etcds_scheme_parses_to_the_same_tls_settings(
    tls_etcd: EtcdMember, tls: TLSFiles
) -> None:
    import urllib.parse

    from kitsd.sd.etcd.url import parse_url

    url = parse_url(urllib.parse.urlsplit(url_of(tls_etcd, tls, "/tls/", "etcds")))
    assert (url.ca, url.cert, url.key) == (str(tls.ca), str(tls.client_cert),
                                           str(tls.client_key))
    assert url.tls
    with pytest.raises(MisuseError, match="ca="):
        parse_url(urllib.parse.urlsplit(f"etcds://{tls_etcd.endpoint}/tls/"))


def test_without_a_client_certificate_the_server_refuses(
    tls_etcd: EtcdMember, tls: TLSFiles, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with sd.instancer_from_url(f"etcd://{tls_etcd.endpoint}/tls/?ca={tls.ca}&timeout=2") \
            as instancer:
        wait_for(lambda: instancer.state.error is not None, 15, "the refusal")
        assert isinstance(instancer.state.error, RegistryUnavailableError)


def test_plain_http_to_a_tls_etcd_is_an_error_event(tls_etcd: EtcdMember) -> None:
    with sd.instancer_from_url(f"etcd://{tls_etcd.endpoint}/tls/?timeout=2") as instancer:
        wait_for(lambda: instancer.state.error is not None, 15, "an error, not a hang")


def test_kitsd_watch_talks_to_a_tls_etcd(
    tls_etcd: EtcdMember, tls: TLSFiles, tls_client: Any
) -> None:
    tls_client.put("/tls-cli/a", "10.0.0.7:80")
    watch = WatchProcess(url_of(tls_etcd, tls, "/tls-cli/"), duration=30)
    try:
        watch.wait_line(lambda line: "10.0.0.7:80" in line, timeout=20)
    finally:
        watch.close()


@pytest.mark.parametrize(
    ("query", "message"),
    [("cert=/c.pem", "together"), ("key=/k.pem", "together"),
     ("cert=/c.pem&key=/k.pem", "need ca"), ("ca=", "file path"),
     ("ca=/no/such/ca.pem", "ca_cert")],
)
def test_bad_tls_parameters_raise_value_error(query: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sd.instancer_from_url(f"etcd://127.0.0.1:1/svc/?{query}")


def test_make_tls_files_with_openssl(tmp_path: Any) -> None:
    """The openssl fallback (used when ``cryptography`` is missing) makes usable files."""
    import shutil
    import ssl

    from kitsd.compose.etcd import _make_tls_files_with_openssl

    if shutil.which("openssl") is None:
        pytest.fail("no openssl command and no cryptography: cannot make test certificates")
    files = TLSFiles(tmp_path / "ca.pem", tmp_path / "s.pem", tmp_path / "s-key.pem",
                     tmp_path / "c.pem", tmp_path / "c-key.pem")
    _make_tls_files_with_openssl(files, tmp_path)
    context = ssl.create_default_context(cafile=str(files.ca))
    context.load_cert_chain(str(files.client_cert), str(files.client_key))
