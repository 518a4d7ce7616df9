"""A real S3-compatible server for the offsite copy's tests: moto's server (from PyPI,
``moto[server]``) in a thread on a free port of the loopback interface, one per test session,
each test in its own bucket. Not a mock of boto3: requests go over HTTP as to any S3 service.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

# Any credentials do for moto; set for the session so the S3 client finds them where it would
# in production, the standard AWS environment variables.
_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "snapbot-test-key",
    "AWS_SECRET_ACCESS_KEY": "snapbot-test-secret",
}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    saved = {name: os.environ.get(name) for name in _CREDENTIALS}
    os.environ.update(_CREDENTIALS)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def new_bucket(endpoint: str) -> str:
    """A fresh, empty bucket on the server; its name."""
    name = f"snapbot-{secrets.token_hex(6)}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    client.close()
    return name


def object_keys(endpoint: str, bucket: str) -> dict[str, bytes]:
    """Every object in the bucket and its bytes, read with a client of its own."""
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    found: dict[str, bytes] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            key = item["Key"]
            found[key] = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    client.close()
    return found


def put_object(endpoint: str, bucket: str, key: str, data: bytes) -> None:
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.put_object(Bucket=bucket, Key=key, Body=data)
    client.close()
