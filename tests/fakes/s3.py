"""S3 on loopback: moto's server (the real S3 REST protocol over a real socket), driven by the real boto3 client."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from moto.server import ThreadedMotoServer

from ops.storage.s3 import ObjectStore, s3_client
from ops.storage.settings import OpsSettings

# moto accepts any credentials; boto3 insists on having some.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class LocalS3:
    endpoint_url: str

    def env(self, bucket: str, prefix: str = "aether") -> dict[str, str]:
        """Environment for an `aether ops` process that uses `bucket` on this server."""
        return {
            **FAKE_CREDENTIALS,
            "AETHER_S3_ENDPOINT_URL": self.endpoint_url,
            "AETHER_S3_BUCKET": bucket,
            "AETHER_S3_PREFIX": prefix,
        }

    def new_bucket(self) -> str:
        name = f"aether-test-{uuid.uuid4().hex[:12]}"
        s3_client(OpsSettings(s3_endpoint_url=self.endpoint_url)).create_bucket(Bucket=name)
        return name

    def store(self, bucket: str, prefix: str = "aether") -> ObjectStore:
        return ObjectStore(s3_client(OpsSettings(s3_endpoint_url=self.endpoint_url)), bucket, prefix)


@contextmanager
def local_s3() -> Iterator[LocalS3]:
    """A moto S3 server on 127.0.0.1 (a free port) for the duration; boto3 credentials set in this process."""
    for name, value in FAKE_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield LocalS3(f"http://{host}:{port}")
    finally:
        server.stop()
