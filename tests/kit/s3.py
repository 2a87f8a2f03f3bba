"""The loopback S3 server for every test that needs S3 (tests/fakes/s3.py), once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.s3 import LocalS3, local_s3


@pytest.fixture(scope="session")
def s3_server() -> Iterator[LocalS3]:
    with local_s3() as server:
        yield server
