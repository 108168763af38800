"""The README's Authentication example runs as written."""

from __future__ import annotations

import contextlib
import io

from tests.thrift.test_readme_section import section_blocks


def test_authentication_example_runs(no_thread_leaks: None) -> None:
    (block,) = section_blocks("Authentication")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(block, {})  # noqa: S102 - the README's own example
    lines = out.getvalue().splitlines()
    assert lines[:2] == [str(["billing"] * 4), str(["t1"] * 4)]
    assert lines[2].startswith("1 <kitsd.auth.ClientCredentials OAuth2 client 'billing'")
    assert "client-secret" not in lines[2]
