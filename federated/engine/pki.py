"""Certificates and keys for a federation: a CA, the SuperLink's TLS certificate, node key pairs.

For the demo, the tests and a small deployment. The SuperLink serves its Fleet, Control and
runtime APIs over TLS with ``--ssl-ca-certfile ca.crt --ssl-certfile server.crt --ssl-keyfile
server.key``; SuperNodes and the ``flwr`` CLI verify it with ``ca.crt`` (``--root-certificates``,
``root-certificates`` in ``$FLWR_HOME/config.toml``). A node authenticates to the SuperLink with
an ECDSA key (a NIST curve, as Flower's SuperNode authentication requires) whose public half
the site registers on the SuperLink.

Pure Python on the ``cryptography`` package; no Django, no Flower.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_CERT",
    "DEFAULT_HOSTS",
    "NodeKey",
    "ServerCertificates",
    "generate_ca",
    "generate_node_key",
    "generate_server_certificates",
    "load_node_key",
]

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"
DEFAULT_HOSTS = ("127.0.0.1", "localhost", "::1")
CA_DAYS = 3650
SERVER_DAYS = 825


@dataclass(frozen=True)
class ServerCertificates:
    """The files ``flower-superlink`` needs, and the CA certificate every client verifies with."""

    ca_cert: Path
    server_cert: Path
    server_key: Path

    def superlink_args(self) -> list[str]:
        return [
            "--ssl-ca-certfile",
            str(self.ca_cert),
            "--ssl-certfile",
            str(self.server_cert),
            "--ssl-keyfile",
            str(self.server_key),
        ]


@dataclass(frozen=True)
class NodeKey:
    """A SuperNode's key pair: the OpenSSH private key file and the public key line."""

    private_key: Path
    public_key: Path

    @property
    def openssh(self) -> str:
        """``ecdsa-sha2-nistp256 AAAA...`` (no comment), as the site stores it."""
        return " ".join(self.public_key.read_text(encoding="ascii").split()[:2])


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, 0o600)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Atelier federation"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def generate_ca(folder: Path, *, common_name: str = "Atelier federation CA") -> Path:
    """A new CA (``ca.crt``, ``ca.key`` 0600) in ``folder``; returns the certificate's path."""
    folder = Path(folder)
    key = ec.generate_private_key(ec.SECP384R1())
    name = _name(common_name)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    folder.mkdir(parents=True, exist_ok=True)
    _write_private(folder / CA_KEY, _pem_key(key))
    (folder / CA_CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return folder / CA_CERT


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host.strip("[]"))))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def generate_server_certificates(
    folder: Path, *, hosts: Sequence[str] = DEFAULT_HOSTS, ca_folder: Path | None = None
) -> ServerCertificates:
    """The SuperLink's certificate and key, signed by the CA in ``ca_folder`` (default:
    ``folder``; a new CA is made there if there is none). ``hosts``: the names and addresses
    clients use to reach the SuperLink (the certificate's subject alternative names)."""
    folder = Path(folder)
    ca_folder = Path(ca_folder) if ca_folder is not None else folder
    if not (ca_folder / CA_CERT).is_file():
        generate_ca(ca_folder)
    ca_cert = x509.load_pem_x509_certificate((ca_folder / CA_CERT).read_bytes())
    ca_key = serialization.load_pem_private_key((ca_folder / CA_KEY).read_bytes(), None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{ca_folder / CA_KEY} is not an EC private key")
    hosts = [h for h in hosts if h] or list(DEFAULT_HOSTS)
    key = ec.generate_private_key(ec.SECP384R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]  # an EC CA key
            critical=False,
        )
        .sign(ca_key, hashes.SHA384())
    )
    folder.mkdir(parents=True, exist_ok=True)
    _write_private(folder / SERVER_KEY, _pem_key(key))
    (folder / SERVER_CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if ca_folder != folder:
        (folder / CA_CERT).write_bytes((ca_folder / CA_CERT).read_bytes())
    return ServerCertificates(folder / CA_CERT, folder / SERVER_CERT, folder / SERVER_KEY)


def generate_node_key(path: Path) -> NodeKey:
    """A SuperNode key pair: ``path`` (OpenSSH private key, 0600) and ``path.pub``."""
    path = Path(path)
    key = ec.generate_private_key(ec.SECP256R1())
    _write_private(
        path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    pub = path.with_name(path.name + ".pub")
    pub.write_bytes(public + b"\n")
    return NodeKey(path, pub)


def load_node_key(path: Path) -> NodeKey:
    """An existing key pair written by :func:`generate_node_key` or ``atelier node init``."""
    path = Path(path)
    pub = path.with_name(path.name + ".pub")
    if not path.is_file() or not pub.is_file():
        raise FileNotFoundError(f"no node key pair at {path} (+ .pub)")
    return NodeKey(path, pub)
