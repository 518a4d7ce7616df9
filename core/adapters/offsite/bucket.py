"""One S3 bucket through boto3: the only module that imports boto3 or botocore.

Blocking calls; ``core.adapters.offsite.store`` runs them in its bounded thread pool. Errors
become ``OffsiteUnavailable`` naming the endpoint and bucket, never the credentials (boto3
reads those from the standard ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` environment
itself; snapbot never holds or logs them).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from core.domain.offsite import OffsiteUnavailable

_MISSING = {"NoSuchKey", "404", "NotFound"}


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    size: int
    modified: datetime


class Bucket:
    """Whole-object reads and writes: every object snapbot stores is small (a chunk is at most
    4 MiB before compression) and written in one PUT, so an object is there completely or not
    at all, which is what makes an interrupted copy safe to run again."""

    def __init__(
        self, endpoint: str, bucket: str, *, region: str = "us-east-1", connections: int = 4
    ) -> None:
        self.endpoint = endpoint
        self.name = bucket
        self.where = f"{endpoint.rstrip('/')}/{bucket}"
        config = botocore.config.Config(
            retries={"max_attempts": 4, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
            max_pool_connections=connections,
            # Path-style: what S3-compatible servers (MinIO, Ceph, Garage) all understand.
            s3={"addressing_style": "path"},
        )
        self._client: Any = boto3.session.Session().client(
            "s3", endpoint_url=endpoint, region_name=region, config=config
        )

    @contextmanager
    def _mapped(self) -> Iterator[None]:
        try:
            yield
        except botocore.exceptions.ClientError as error:
            info = error.response.get("Error", {})
            code = str(info.get("Code", "?"))
            message = str(info.get("Message", "")) or code
            raise OffsiteUnavailable(self.where, f"{code}: {message}") from None
        except botocore.exceptions.BotoCoreError as error:
            raise OffsiteUnavailable(self.where, type(error).__name__ + ": " + str(error)) from None

    def check(self) -> None:
        """Raises ``OffsiteUnavailable`` unless the bucket exists and answers."""
        with self._mapped():
            self._client.head_bucket(Bucket=self.name)

    def objects(self, prefix: str) -> Iterator[StoredObject]:
        with self._mapped():
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.name, Prefix=prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    yield StoredObject(str(item["Key"]), int(item["Size"]), item["LastModified"])

    def get(self, key: str) -> bytes | None:
        """The object's bytes, None when there is none."""
        try:
            with self._mapped_missing():
                answer = self._client.get_object(Bucket=self.name, Key=key)
                body: bytes = answer["Body"].read()
                return body
        except _Missing:
            return None

    @contextmanager
    def _mapped_missing(self) -> Iterator[None]:
        try:
            yield
        except botocore.exceptions.ClientError as error:
            if str(error.response.get("Error", {}).get("Code")) in _MISSING:
                raise _Missing from None
            with self._mapped():
                raise

    def put(self, key: str, data: bytes) -> None:
        with self._mapped():
            self._client.put_object(Bucket=self.name, Key=key, Body=data)

    def delete(self, key: str) -> None:
        with self._mapped():
            self._client.delete_object(Bucket=self.name, Key=key)

    def move(self, key: str, new_key: str) -> None:
        with self._mapped():
            self._client.copy_object(
                Bucket=self.name, Key=new_key, CopySource={"Bucket": self.name, "Key": key}
            )
            self._client.delete_object(Bucket=self.name, Key=key)

    def close(self) -> None:
        self._client.close()


class _Missing(Exception):
    pass
