"""Secure baseline: the grpcio contender of ``grpcio_unary.py`` over TLS.

Same generic handler, identity serializers, sync server with 10 threads and
``.future()`` throughput; only the port and the channel change: the server
listens with ``grpc.ssl_server_credentials`` and the client connects with
``grpc.ssl_channel_credentials(root_certificates=<the server's certificate>)``,
grpc's default TLS settings (its own choice of version and cipher).

The certificate is self-signed, made at run time by ``probe`` in the
directory ``BENCH_TLS_DIR`` (run.py: ``bench/build/e2e/tls``): an EC P-256
key, subject ``localhost``, subjectAltName ``DNS:localhost, IP:127.0.0.1``
(the client's target is ``127.0.0.1:PORT``, which the IP entry matches, so no
``ssl_target_name_override``), valid for 7 days. Made with the
``cryptography`` package; where it is not installed, with the ``openssl``
command line; with neither, the contender is unavailable. The key and the
certificate live only in the build directory (gitignored) and are made anew
every run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from harness import HOST, NoAnswer, run

from contenders import grpcio_unary as plain

CERT = "cert.pem"
KEY = "key.pem"
MADE_BY = "made-by.txt"
DAYS = 7


def _dir() -> Path:
    d = os.environ.get("BENCH_TLS_DIR")
    if not d:
        raise SystemExit("BENCH_TLS_DIR is not set (run.py sets it)")
    return Path(d)


def _openssl(d: Path) -> str:
    exe = shutil.which("openssl")
    if exe is None:
        raise FileNotFoundError("openssl")
    subprocess.run(
        [exe, "req", "-x509", "-newkey", "ec",
         "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(d / KEY), "-out", str(d / CERT), "-days", str(DAYS),
         "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60)
    version = subprocess.run([exe, "version"], capture_output=True, text=True,
                             timeout=10).stdout.split()
    return f"the openssl command ({' '.join(version[:2]) or '?'})"


def _cryptography(d: Path) -> str:
    import datetime
    import ipaddress

    import cryptography
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=DAYS))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None),
                           critical=True)
            .sign(key, hashes.SHA256()))
    fd = os.open(d / KEY, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
    (d / CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return f"the cryptography package ({cryptography.__version__})"


def make_certificate() -> None:
    """A fresh self-signed certificate and key in ``BENCH_TLS_DIR``."""
    d = _dir()
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o700)  # the key is unencrypted
    for f in (CERT, KEY, MADE_BY):
        (d / f).unlink(missing_ok=True)
    try:
        how = _cryptography(d)
    except ImportError:
        try:
            how = _openssl(d)
        except FileNotFoundError:
            raise SystemExit("no `cryptography` package and no `openssl` "
                             "command to make a TLS certificate") from None
        except subprocess.CalledProcessError as e:
            raise SystemExit("openssl could not make a certificate: "
                             + (e.stderr or b"").decode(errors="replace").strip()
                             ) from None
    (d / MADE_BY).write_text(how)


def probe() -> None:
    plain.probe()
    make_certificate()


def info() -> dict:
    out = plain.info()
    try:
        made_by = (_dir() / MADE_BY).read_text()
    except OSError:
        made_by = "?"
    out["tls"] = ("grpc's default TLS settings; self-signed EC P-256 "
                  f"certificate for localhost / {HOST}, made by {made_by}")
    return out


def _read(name: str) -> bytes:
    return (_dir() / name).read_bytes()


def tls_port(srv, address: str) -> int:
    import grpc

    creds = grpc.ssl_server_credentials([(_read(KEY), _read(CERT))])
    return srv.add_secure_port(address, creds)


def tls_channel(args):
    import grpc

    creds = grpc.ssl_channel_credentials(root_certificates=_read(CERT))
    return grpc.secure_channel(f"{HOST}:{args.port}", creds)


def server(args) -> None:
    plain.server(args, add_port=tls_port)


def latency(args, body: bytes):
    return plain.latency(args, body, make_channel=tls_channel)


def throughput(args, body: bytes):
    return plain.throughput(args, body, make_channel=tls_channel)


def ping(args, body: bytes) -> None:
    plain.ping(args, body, make_channel=tls_channel)


def plaintext_ping(args, body: bytes) -> None:
    """An insecure channel to the TLS port: the handshake must fail."""
    import grpc

    channel = plain.insecure_channel(args)
    try:
        channel.unary_unary(plain.METHOD)(
            body, timeout=min(args.timeout_ms / 1000, 2.0))
    except grpc.RpcError as e:
        raise NoAnswer(f"{e.code().name}: {e.details()}") from None
    finally:
        channel.close()


if __name__ == "__main__":
    run(probe=probe, server=server, latency=latency, throughput=throughput,
        ping=ping, plaintext_ping=plaintext_ping, info=info)
