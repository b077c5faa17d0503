"""A throw-away certificate authority for TLS tests, made with the openssl command.

``make_ca(dir)`` creates a self-signed CA; ``issue(ca, dir, name, dns=..., ips=...)``
signs a certificate for a server (or client) with the given subject alt names.
EC P-256 keys, unencrypted PEM, valid for two days: fast to make, readable by
both Python's ssl module and RabbitMQ (Erlang ssl).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

OPENSSL = shutil.which("openssl") or "openssl"
_KEY_ARGS = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key (PEM files)."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA: its certificate (what clients trust) and key (what signs)."""

    name: str
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    if shutil.which(OPENSSL) is None:
        pytest.fail("openssl not found: TLS tests need it (`apt-get install openssl`)")
    result = subprocess.run(
        [OPENSSL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {result.stderr}")


def make_ca(directory: Path, name: str = "logrouter test CA") -> CertificateAuthority:
    """A self-signed CA in ``directory`` (files ``<slug>.pem`` and ``<slug>.key``)."""
    directory.mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isalnum() else "_" for c in name)
    cert, key = directory / f"{slug}.pem", directory / f"{slug}.key"
    _openssl(
        "req", "-x509", *_KEY_ARGS,
        "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
        cwd=directory,
    )  # fmt: skip
    return CertificateAuthority(name, cert, key)


def issue(
    ca: CertificateAuthority,
    directory: Path,
    name: str,
    *,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
) -> Issued:
    """A certificate for ``name`` signed by ``ca``, with DNS/IP subject alt names."""
    directory.mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isalnum() else "_" for c in name)
    cert, key, csr = (directory / f"{slug}.{ext}" for ext in ("pem", "key", "csr"))
    ext = directory / f"{slug}.ext"
    alt = ",".join([f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips])
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n" + (f"subjectAltName={alt}\n" if alt else "")
    )
    _openssl("req", "-new", *_KEY_ARGS, "-keyout", str(key), "-out", str(csr),
             "-subj", f"/CN={name}", cwd=directory)  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext),
        cwd=directory,
    )  # fmt: skip
    key.chmod(0o600)
    return Issued(cert, key)


def node_tls_config(port: int, ca: CertificateAuthority, server: Issued) -> str:
    """rabbitmq.conf lines for an amqps listener on 127.0.0.1:``port``.

    The node asks for a client certificate and verifies it against ``ca`` when one is
    sent (verify_peer), but accepts clients without one (fail_if_no_peer_cert = false).
    """
    return (
        f"listeners.ssl.default = 127.0.0.1:{port}\n"
        f"ssl_options.cacertfile = {ca.cert}\n"
        f"ssl_options.certfile = {server.cert}\n"
        f"ssl_options.keyfile = {server.key}\n"
        "ssl_options.verify = verify_peer\n"
        "ssl_options.fail_if_no_peer_cert = false\n"
    )
