"""Secrets of a secure stack, made on the spot under $RUN/secrets (folder 700, files 600) and kept across
`up`s: the brokers' SCRAM users are written into their storage when it is formatted, so a password
made again would no longer open them.

    ca.pem, ca.key              a CA of this run folder only (openssl, EC P-256, 825 days)
    server.pem, server.key      the one server certificate, signed by it: SAN IP:127.0.0.1, DNS:localhost;
                                serverAuth and clientAuth (the brokers also show it to the controllers)
    kafka-keystore.pem          Kafka's PEM key store: the key (PKCS#8, encrypted with kafka-key.password),
                                the certificate and the CA
    <service>-<user>.password   random passwords: kafka-admin, kafka-facestream, redis-admin, redis-enroll,
                                redis-matcher
Passwords are only ever written to these files; the script prints their paths.
"""
from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from scripts.stack_mode import SECRETS

CERT_DAYS = "825"
BROKER_CN = "facestream-broker"  # the controllers' principal for the brokers: User:CN=facestream-broker


def private_dir() -> Path:
    SECRETS.mkdir(parents=True, exist_ok=True)
    SECRETS.chmod(0o700)
    return SECRETS


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(0o600)


def password_file(name: str) -> Path:
    """$RUN/secrets/<name>.password, made once (hex: safe inside Kafka's `[name=..,password=..]` and JAAS)."""
    path = private_dir() / f"{name}.password"
    if not path.exists():
        write_private(path, secrets.token_hex(24))
    return path


def password(name: str) -> str:
    return password_file(name).read_text().strip()


@dataclass(frozen=True)
class Tls:
    ca: Path
    cert: Path
    key: Path
    kafka_keystore: Path
    kafka_key_password: Path


def tls_files() -> Tls:
    d = SECRETS
    return Tls(d / "ca.pem", d / "server.pem", d / "server.key", d / "kafka-keystore.pem",
               d / "kafka-key.password")


def openssl(*args: str) -> None:
    res = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"[stack] openssl {args[0]} failed: {res.stderr.strip()}")


def make_ca(d: Path) -> None:
    openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"), "-days", CERT_DAYS,
            "-subj", "/CN=facestream local CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")


def make_server_cert(d: Path) -> None:
    ext = d / "server.ext"
    write_private(ext, "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                       "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(d / "server.key"), "-out", str(d / "server.csr"), "-subj", f"/CN={BROKER_CN}")
    openssl("x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
            "-CAcreateserial", "-days", CERT_DAYS, "-extfile", str(ext), "-out", str(d / "server.pem"))
    for leftover in ("server.csr", "server.ext", "ca.srl"):
        (d / leftover).unlink(missing_ok=True)


def make_kafka_keystore(t: Tls) -> None:
    """Kafka reads a PEM key store only with an encrypted PKCS#8 key (ssl.key.password), and Java 17 cannot
    decrypt OpenSSL's default PBES2 (`PBES2 SecretKeyFactory not available`): PBE-SHA1-3DES it reads. The
    file is as private as the password beside it, so the older cipher costs nothing here."""
    encrypted = SECRETS / "server.key.p8"
    kpw = password_file("kafka-key")
    openssl("pkcs8", "-topk8", "-in", str(t.key), "-out", str(encrypted), "-v1", "PBE-SHA1-3DES",
            "-passout", f"file:{kpw}")
    write_private(t.kafka_keystore, encrypted.read_text() + t.cert.read_text() + t.ca.read_text())
    encrypted.unlink()


def ensure_tls() -> Tls:
    """The CA, the server certificate and Kafka's key store, made where missing."""
    d = private_dir()
    old = os.umask(0o077)  # openssl's files are born private
    try:
        if not (d / "ca.pem").exists():
            make_ca(d)
        t = tls_files()
        if not t.cert.exists():
            make_server_cert(d)
        if not t.kafka_keystore.exists():
            make_kafka_keystore(t)
    finally:
        os.umask(old)
    for f in d.iterdir():
        f.chmod(0o600)
    return t
