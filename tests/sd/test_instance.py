"""Tests for sd.instance: parsing, normalising and cleaning instance strings."""

from __future__ import annotations

import logging
import re

import pytest

from kitsd.core.errors import InvalidInstanceError, MisuseError
from kitsd.core.redact import shown_address
from kitsd.sd.instance import (
    clean_instances,
    join_host_port,
    normalize_instance,
    split_address,
    split_instance,
)

INVALID = [
    "",
    "   ",
    "host",
    "host:",
    "host:0",
    "host:65536",
    "host:-1",
    "host:abc",
    "host:+80",
    "host:8O",
    ":80",
    "::1:80",  # IPv6 without brackets
    "fe80::1:443",  # IPv6 without brackets
    "a b:80",
    "bad_host!:80",
    "[::1]",
    "[::1]:",
    "[::1:80",
    "[1.2.3.4]:80",
    "[not-ipv6]:80",
    "-leading-dash:80",
    "host:\u0663",  # an Arabic-Indic digit: a digit, but not ASCII
]


@pytest.mark.parametrize("value", INVALID)
def test_invalid_instances_raise_value_error_naming_the_value(value: str) -> None:
    # named by the redaction rule: a port that is not a number shows as *** (issue 16.5)
    with pytest.raises(ValueError, match=re.escape(shown_address(value))) as excinfo:
        normalize_instance(value)
    assert isinstance(excinfo.value, InvalidInstanceError)
    assert isinstance(excinfo.value, MisuseError)
    assert excinfo.value.value == value


@pytest.mark.parametrize("value", [None, 80, b"host:80", ("host", 80)])
def test_non_strings_are_invalid(value: object) -> None:
    with pytest.raises(InvalidInstanceError):
        normalize_instance(value)


@pytest.mark.parametrize("port", [1, 80, 65535])
def test_port_bounds_are_inclusive(port: int) -> None:
    assert normalize_instance(f"host:{port}") == f"host:{port}"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("[0:0::1]:80", "[::1]:80"),
        ("[0000:0000:0000:0000:0000:0000:0000:0001]:80", "[::1]:80"),
        ("[FE80::ABCD]:443", "[fe80::abcd]:443"),
        ("HOST.Example.COM:80", "host.example.com:80"),
        ("Host:080", "host:80"),
        ("  host:80  ", "host:80"),
        ("127.0.0.1:8080", "127.0.0.1:8080"),
        ("my_service.local:1", "my_service.local:1"),
    ],
)
def test_normalize_instance_gives_the_canonical_form(value: str, expected: str) -> None:
    assert normalize_instance(value) == expected
    assert normalize_instance(expected) == expected  # idempotent


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("host:80", ("host", 80)),
        ("[::1]:8080", ("::1", 8080)),
        ("[0:0::1]:8080", ("::1", 8080)),
        ("10.0.0.1:1", ("10.0.0.1", 1)),
        ("UPPER:2", ("upper", 2)),
    ],
)
def test_split_instance(value: str, expected: tuple[str, int]) -> None:
    assert split_instance(value) == expected


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("host", 80, "host:80"),
        ("Host", "80", "host:80"),
        ("::1", 80, "[::1]:80"),
        ("[::1]", 80, "[::1]:80"),
        ("0:0::1", 443, "[::1]:443"),
        ("10.1.2.3", 9, "10.1.2.3:9"),
    ],
)
def test_join_host_port(host: str, port: int | str, expected: str) -> None:
    assert join_host_port(host, port) == expected


@pytest.mark.parametrize(("host", "port"), [("host", 0), ("host", 70000), ("", 80), ("a b", 1)])
def test_join_host_port_rejects_bad_parts(host: str, port: int) -> None:
    with pytest.raises(InvalidInstanceError):
        join_host_port(host, port)


def test_split_and_join_round_trip() -> None:
    for value in ["host:80", "[::1]:80", "[fe80::1]:1", "10.0.0.1:65535"]:
        assert join_host_port(*split_instance(value)) == normalize_instance(value)


def test_clean_instances_sorts_normalises_and_deduplicates() -> None:
    raw = ["b:2", "a:1", "A:1", "[0:0::1]:80", "[::1]:80", "b:2"]
    expected = tuple(sorted({normalize_instance(value) for value in raw}))
    assert clean_instances(raw) == expected
    assert list(expected) == sorted(expected)
    assert len(expected) == len(set(expected))


def test_clean_instances_skips_invalid_values_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="kitsd.sd.instance"):
        cleaned = clean_instances(["good:1", "bad", "also:bad", 42], source="consul")
    assert cleaned == ("good:1",)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert all("consul" in record.getMessage() for record in warnings)
    assert any("'bad'" in record.getMessage() for record in warnings)


def test_clean_instances_of_nothing_is_empty() -> None:
    assert clean_instances([]) == ()


@pytest.mark.parametrize(
    ("value", "default", "expected"),
    [("127.0.0.1:2379", None, ("127.0.0.1", 2379)),
     ("[::1]:8500", None, ("[::1]", 8500)),
     ("etcd1", 2379, ("etcd1", 2379)),
     ("[::1]", 2379, ("[::1]", 2379)),
     ("Etcd1:1", 2379, ("etcd1", 1))],
)
def test_split_address_keeps_ipv6_brackets(
    value: str, default: int | None, expected: tuple[str, int]
) -> None:
    assert split_address(value, default_port=default) == expected


@pytest.mark.parametrize("value", ["etcd1", "[::1]", "h:0", "h:x", "::1:80", ""])
def test_split_address_rejects_what_is_not_host_port(value: str) -> None:
    with pytest.raises(InvalidInstanceError):
        split_address(value)


@pytest.mark.parametrize(
    "value",
    ["evil\n:80", "evil\n:80\n", "ev\nil:80", "evil.example\n:80", "a.b\n.c:80", "evil:80\n1"],
)
def test_a_newline_inside_an_instance_is_invalid(value: str) -> None:
    # Issue 7.5: a "$" in the host pattern matched before a trailing newline.
    with pytest.raises(InvalidInstanceError):
        normalize_instance(value)
    assert clean_instances([value, "a:1"]) == ("a:1",)


@pytest.mark.parametrize(
    "value", ["admin:S3cr3t@host", "admin:S3cr3t@10.0.0.1:80", "S3cr3t@h:1", "u:S3cr3t@[::1]:80",
              "x:S3cr3t@", "a:S3cr3t@b@c:80", " u:S3cr3t@h:1 "],
)
def test_errors_never_show_user_information(value: str, caplog: pytest.LogCaptureFixture) -> None:
    # Issue 7.7: "admin:S@host" echoed the password in the message.
    with pytest.raises(InvalidInstanceError) as excinfo:
        normalize_instance(value)
    assert "S3cr3t" not in str(excinfo.value)
    assert "S3cr3t" not in repr(excinfo.value)
    assert "'user:password@'" in str(excinfo.value)
    with caplog.at_level(logging.WARNING, logger="kitsd.sd.instance"):
        assert clean_instances([value], source="test") == ()
    assert caplog.records
    assert all("S3cr3t" not in record.getMessage() for record in caplog.records)


def test_huge_values_are_cut_in_messages(caplog: pytest.LogCaptureFixture) -> None:
    # Issue 7.9: a 1 MiB junk registry value made a 1 MiB warning line.
    junk = ["x" * (1 << 20), "y" * (1 << 20) + ":80", "h:" + "9" * (1 << 20), "[" + "z" * (1 << 20)]
    with caplog.at_level(logging.WARNING, logger="kitsd.sd.instance"):
        assert clean_instances([*junk, "a:1"], source="etcd") == ("a:1",)
    assert len(caplog.records) == len(junk)
    for record in caplog.records:
        message = record.getMessage()
        assert len(message) < 500
        assert "bytes)" in message
    with pytest.raises(InvalidInstanceError) as excinfo:
        normalize_instance(junk[1])
    assert len(str(excinfo.value)) < 500
    assert excinfo.value.value == junk[1]  # the attribute keeps the value as given


@pytest.mark.parametrize(
    "value",
    ["a:1", "a.b-c.example:65535", "10.0.0.1:80", "255.255.255.255:1", "host_x.:8080",
     "A.B:80", " a:1 ", "a:080", "01.2.3.4:80", "1.2.3:80", "[0:0::1]:80", "x" * 63 + ":1",
     ("a" * 63 + ".") * 3 + "a" * 61 + ":1", ("a" * 63 + ".") * 4 + ":1", "x" * 64 + ":1",
     "a..b:80", "-a:80", "a-:80", "a.-b:80", "a:65536", "a:0", "a:00080"],
)
def test_the_canonical_fast_path_agrees_with_the_full_parse(value: str) -> None:
    # The fast path returns a canonical string as it is; the full parse decides the rest.
    try:
        host, port = split_instance(value)
    except InvalidInstanceError:
        with pytest.raises(InvalidInstanceError):
            normalize_instance(value)
        return
    expected = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    assert normalize_instance(value) == expected
    assert clean_instances([value]) == (expected,)


def test_a_canonical_instance_comes_back_as_the_same_string() -> None:
    value = "".join(["10.0.0.1", ":80"])  # a fresh string, as decoded from a registry answer
    assert normalize_instance(value) is value


def test_user_information_inside_a_non_string_value_is_not_shown() -> None:
    entry = {"Service": {"Address": "admin:S3cr3t@10.0.0.1", "Port": 80}}
    error = InvalidInstanceError(entry, "a registry entry")
    assert "S3cr3t" not in str(error)
    assert "10.0.0.1" in str(error)
