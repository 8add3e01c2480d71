"""Shared by the verifier's tests: one fake issuer per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from idp_verifier.testing import IssuerServer


@pytest.fixture(scope="module")
def server() -> Iterator[IssuerServer]:
    server = IssuerServer()
    server.start()
    yield server
    server.stop()
