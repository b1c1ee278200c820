"""A local S3 for tests: moto's standalone server in a thread (needs ``moto[server]``).

::

    with moto_server() as endpoint_url:
        create_bucket(endpoint_url, "roomsync-test")
        store = S3BlobStore("roomsync-test", endpoint_url=endpoint_url, **MOTO_CREDENTIALS)

The server listens on 127.0.0.1 on a port the OS picks, so parallel runs never collide.
What moto 5 does not emulate (checked against 5.2.1): it does not check presigned URLs at
all (neither their signature nor their expiry, signed ``Content-Length`` or
``x-amz-checksum-sha256``), and it accepts any credentials unless :func:`moto_auth_enforced`
is active.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# botocore ships no type information (no py.typed).
import botocore.loaders  # type: ignore[import-untyped]
import botocore.session  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]

#: Credentials moto accepts while authentication is not enforced.
MOTO_CREDENTIALS: dict[str, str] = {
    "region": "us-east-1",
    "access_key_id": "roomsync-test",
    "secret_access_key": "roomsync-test-secret",
}


def s3_blob_settings(endpoint_url: str, bucket: str) -> dict[str, Any]:
    """``running_server`` overrides for blobs in ``bucket`` on the moto server at
    ``endpoint_url``."""
    return {
        "blobs__backend": "s3",
        "blobs__s3_bucket": bucket,
        "blobs__s3_endpoint_url": endpoint_url,
        "blobs__s3_access_key_id": MOTO_CREDENTIALS["access_key_id"],
        "blobs__s3_secret_access_key": MOTO_CREDENTIALS["secret_access_key"],
    }


@contextmanager
def moto_server(host: str = "127.0.0.1") -> Iterator[str]:
    """Run a moto server for the duration of the block; yield its endpoint URL.

    Werkzeug's per-request log lines are silenced while it runs.
    """
    # Imported here: moto is a test dependency, not a runtime one.
    from moto.server import ThreadedMotoServer

    werkzeug_log = logging.getLogger("werkzeug")
    old_level = werkzeug_log.level
    werkzeug_log.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address=host, port=0, verbose=False)
    server.start()
    try:
        bound_host, port = server.get_host_and_port()
        yield f"http://{bound_host}:{port}"
    finally:
        server.stop()
        werkzeug_log.setLevel(old_level)


_loader: Any = None


def _client(endpoint_url: str, region: str) -> Any:
    global _loader
    if _loader is None:
        _loader = botocore.loaders.create_loader()
    session = botocore.session.get_session()
    # One data loader for every client: parsing the S3 model per client costs ~0.1 s.
    session.register_component("data_loader", _loader)
    return session.create_client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=MOTO_CREDENTIALS["access_key_id"],
        aws_secret_access_key=MOTO_CREDENTIALS["secret_access_key"],
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def create_bucket(endpoint_url: str, name: str, *, region: str = "us-east-1") -> None:
    """Create the bucket ``name`` on the server (blocking; moto answers in milliseconds)."""
    client = _client(endpoint_url, region)
    try:
        params: dict[str, Any] = {"Bucket": name}
        if region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": region}
        client.create_bucket(**params)
    finally:
        client.close()


def put_raw_object(
    endpoint_url: str, bucket: str, key: str, data: bytes, *, region: str = "us-east-1"
) -> None:
    """Write ``data`` under ``key`` bypassing every check (to corrupt a stored blob)."""
    client = _client(endpoint_url, region)
    try:
        client.put_object(Bucket=bucket, Key=key, Body=data)
    finally:
        client.close()


def _set_auth_count(endpoint_url: str, count: str) -> str:
    request = urllib.request.Request(
        f"{endpoint_url}/moto-api/reset-auth",
        data=count.encode("ascii"),
        method="POST",
        # Not form-encoded: moto reads the raw body, which Flask hides for form posts.
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        body = json.loads(response.read())
    return str(body["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"])


@contextmanager
def moto_auth_enforced(endpoint_url: str) -> Iterator[None]:
    """Make moto check request signatures and access keys inside the block.

    Only keys of IAM users created in moto are then accepted, so any other credentials get
    ``InvalidAccessKeyId`` / 403. The switch is process-wide in moto (every in-process moto
    server obeys it) and is restored on exit; do not run other moto tests concurrently.
    Presigned URLs are not checked even then (moto fails them with a 500).
    """
    previous = _set_auth_count(endpoint_url, "0")
    try:
        yield
    finally:
        _set_auth_count(endpoint_url, previous)
