"""A throwaway certificate authority for TLS tests (``trustme``, a test dependency)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TlsFiles:
    """A server certificate for 127.0.0.1/localhost and a client context trusting its CA."""

    cert: Path
    key: Path
    client_ctx: ssl.SSLContext


def self_signed(directory: Path) -> TlsFiles:
    """Write ``cert.pem`` and ``key.pem`` into ``directory``; for ``--tls-cert/--tls-key``."""
    import trustme  # test dependency: only needed when a test asks for TLS

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = TlsFiles(directory / "cert.pem", directory / "key.pem", ssl.create_default_context())
    cert.private_key_and_cert_chain_pem.write_to_path(str(files.cert))
    cert.private_key_pem.write_to_path(str(files.key))
    ca.configure_trust(files.client_ctx)
    return files
