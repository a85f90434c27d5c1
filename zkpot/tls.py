"""Mutual TLS material: a development CA, certificates it issues, and gRPC credentials.

Layout of a node's TLS directory (the names of a Kubernetes `kubernetes.io/tls` secret plus the CA):

    DIR/tls.crt   this node's certificate (ECDSA P-256), signed by the CA
    DIR/tls.key   its private key (0600)
    DIR/ca.crt    the CA that every peer's certificate must chain to

A CA directory holds ca.crt and ca.key. `zkpot tls dev-ca` makes one and `zkpot tls issue` signs a
node certificate with it. The dev CA is for devnets and test clusters: whoever holds ca.key can
mint identities, so a real deployment keeps it offline (or uses its own PKI, e.g. cert-manager).

With TLS on, every server requires a client certificate from the same CA (mutual TLS) and every
client checks the server's certificate against the host it dialled (SANs: the node name,
localhost, 127.0.0.1 by default; add service DNS names with --san).
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT, CA_KEY = "ca.crt", "ca.key"
NODE_CERT, NODE_KEY = "tls.crt", "tls.key"
DEFAULT_DAYS = 365
ENV_TLS_DIR = "ZKPOT_TLS_DIR"  # default for every --tls-dir flag


@dataclass(frozen=True)
class TlsMaterial:
    """PEM bytes of one node's certificate chain, its key and the trusted CA."""

    cert: bytes
    key: bytes
    ca: bytes

    @classmethod
    def load(cls, directory: Path) -> TlsMaterial:
        d = Path(directory)
        missing = [n for n in (NODE_CERT, NODE_KEY, CA_CERT) if not (d / n).is_file()]
        if missing:
            raise FileNotFoundError(f"TLS directory {d} lacks {', '.join(missing)} (see `zkpot tls issue`)")
        return cls((d / NODE_CERT).read_bytes(), (d / NODE_KEY).read_bytes(), (d / CA_CERT).read_bytes())

    def server_credentials(self):  # noqa: ANN201 - grpc.ServerCredentials
        import grpc

        return grpc.ssl_server_credentials([(self.key, self.cert)], root_certificates=self.ca,
                                           require_client_auth=True)

    def channel_credentials(self):  # noqa: ANN201 - grpc.ChannelCredentials
        import grpc

        return grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.key,
                                            certificate_chain=self.cert)

    def common_name(self) -> str:
        cert = x509.load_pem_x509_certificate(self.cert)
        return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


# ---------------------------------------------------------------------------------------------- issuing


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(out: Path, name: str = "zkpot dev CA", days: int = DEFAULT_DAYS) -> Path:
    """Write a self-signed CA (ca.crt, ca.key) into `out`; returns `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    (out / CA_CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(out / CA_KEY, _key_pem(key))
    return out


def _san(value: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        return x509.DNSName(value)


def issue(ca_dir: Path, name: str, out: Path, sans: list[str] | None = None, days: int = DEFAULT_DAYS) -> Path:
    """Write tls.crt, tls.key and ca.crt for node `name` into `out`, signed by the CA in `ca_dir`.

    The certificate serves as both server and client certificate (mutual TLS); its SANs are
    `name`, localhost, 127.0.0.1 and `sans`.
    """
    ca_dir, out = Path(ca_dir), Path(out)
    ca_cert = x509.load_pem_x509_certificate((ca_dir / CA_CERT).read_bytes())
    ca_key = serialization.load_pem_private_key((ca_dir / CA_KEY).read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{ca_dir / CA_KEY} is not an ECDSA key")
    key = ec.generate_private_key(ec.SECP256R1())
    names = list(dict.fromkeys([name, "localhost", "127.0.0.1", *(sans or [])]))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / NODE_CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(out / NODE_KEY, _key_pem(key))
    (out / CA_CERT).write_bytes((ca_dir / CA_CERT).read_bytes())
    return out


# ---------------------------------------------------------------------------------------------- CLI


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="tls_command", required=True)
    ca = sub.add_parser("dev-ca", help="create a development CA (ca.crt, ca.key)")
    ca.add_argument("--out", type=Path, required=True, help="CA directory")
    ca.add_argument("--name", default="zkpot dev CA")
    ca.add_argument("--days", type=int, default=DEFAULT_DAYS)
    ca.add_argument("--force", action="store_true", help="overwrite an existing CA")
    ca.set_defaults(func=_dev_ca)
    iss = sub.add_parser("issue", help="issue a node certificate (tls.crt, tls.key, ca.crt)")
    iss.add_argument("--ca", type=Path, required=True, help="CA directory (zkpot tls dev-ca)")
    iss.add_argument("--name", required=True, help="node name (certificate CN and first SAN)")
    iss.add_argument("--out", type=Path, required=True, help="node TLS directory (what --tls-dir takes)")
    iss.add_argument("--san", action="append", default=[], help="extra DNS name or IP address (repeatable)")
    iss.add_argument("--days", type=int, default=DEFAULT_DAYS)
    iss.set_defaults(func=_issue)


def _dev_ca(args: argparse.Namespace) -> int:
    if (args.out / CA_KEY).exists() and not args.force:
        print(f"{args.out / CA_KEY} exists (use --force to overwrite)")
        return 1
    make_ca(args.out, args.name, args.days)
    print(f"dev CA written to {args.out} (keep {CA_KEY} private: it can mint any identity)")
    return 0


def _issue(args: argparse.Namespace) -> int:
    issue(args.ca, args.name, args.out, args.san, args.days)
    print(f"{args.name}: {args.out / NODE_CERT}, {args.out / NODE_KEY}, {args.out / CA_CERT}")
    return 0
