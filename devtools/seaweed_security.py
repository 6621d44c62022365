"""SeaweedFS's own locks for the local stack: `security.toml` in the server's working folder, read first by every
SeaweedFS server (master, volume, filer, S3 gateway; the scaffold's search order starts at ./security.toml,
seaweedfs/seaweedfs weed/command/scaffold/security.toml).

- HTTP: JWT signing keys for writes and reads on the volume server ([jwt.signing], [jwt.signing.read]) and on the
  filer ([jwt.filer_signing], [jwt.filer_signing.read]): a request without a token signed with the key is
  refused; the S3 gateway signs its own. The volume UI stays off ([access] ui = false) and the filer returns no
  folder metadata ([filer.expose_directory_metadata] enabled = false).
- gRPC: mutual TLS on every gRPC port ([grpc] ca, [grpc.<component>] cert/key, [grpc.client]): a private CA and
  one certificate made here (host names are not checked, the scaffold says), so a client without the key is
  refused during the handshake.
- The master's HTTP API (which hands out write tokens for new files) is limited by [guard] white_list to an
  address no local process has (the internal servers talk to the master over gRPC).

Every file is written 0600 in the server's 0700 folder; nothing here is ever printed.
"""

from __future__ import annotations

import datetime
import secrets
from pathlib import Path

UNREACHABLE = "192.0.2.1"  # TEST-NET-1 (RFC 5737): never a local address
GRPC_COMPONENTS = ("master", "volume", "filer", "s3", "msg_broker", "msg_agent", "admin", "worker", "mq")


def _certificate_pair(folder: Path, write_private) -> tuple[Path, Path, Path]:
    """A private CA and one certificate/key it signed (server and client auth), as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    later = now + datetime.timedelta(days=3650)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "abstractinator local stack CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(later)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(later)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    write_private(paths[0], ca.public_bytes(serialization.Encoding.PEM).decode())
    write_private(paths[1], certificate.public_bytes(serialization.Encoding.PEM).decode())
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private(paths[2], pem_key.decode())
    return paths


def write_security_config(folder: Path, write_private) -> Path:
    """`folder/security.toml` (made once; kept across restarts), with its keys and certificates beside it."""
    path = folder / "security.toml"
    if path.is_file():
        return path
    tls = folder / "tls"
    tls.mkdir(mode=0o700, exist_ok=True)
    ca, certificate, key = _certificate_pair(tls, write_private)
    lines = ["[access]", "ui = false", "", "[filer.expose_directory_metadata]", "enabled = false", ""]
    for section in ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read"):
        lines += [f"[{section}]", f'key = "{secrets.token_hex(32)}"', "expires_after_seconds = 10", ""]
    lines += ["[grpc]", f'ca = "{ca}"', ""]
    for component in (*GRPC_COMPONENTS, "client"):
        lines += [f"[grpc.{component}]", f'cert = "{certificate}"', f'key = "{key}"', ""]
    for server in ("master", "admin"):  # their HTTP APIs take no token: HTTPS with a client certificate required
        lines += [f"[https.{server}]", f'cert = "{certificate}"', f'key = "{key}"', f'ca = "{ca}"', ""]
    lines += ["[admin]", 'user = "admin"', f'password = "{secrets.token_hex(16)}"', ""]
    write_private(path, "\n".join(lines))
    return path
