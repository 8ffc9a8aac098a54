"""Redis: plain TCP with no login (the default), or TLS only with ACL users (FACESTREAM_REDIS_SECURITY=acl_tls).

In acl_tls mode redis-server listens on the TLS port alone (`--port 0`), with the server certificate of
$RUN/secrets (clients are not asked for one), and $RUN/secrets/redis-users.acl holds the users (by the
SHA-256 of their passwords; the passwords are in redis-<user>.password). The rules are in ACL_RULES and
in scripts/stack.py's docstring.
"""
from __future__ import annotations

import hashlib
import socket
import ssl

from scripts.stack_mode import REDIS_DIR, SECRETS, Mode
from scripts.stack_proc import launch, log, pid_alive, refuse_taken, wait_until
from scripts.stack_secrets import ensure_tls, password, write_private

# Key patterns are globs, and `*` also matches ':': `facestream:*` covers the default gallery prefix
# (facestream:gallery) and the tests' (facestream:test-<run>). Redis has no "all but" pattern, so enroll
# may also touch visits keys; the matcher may write visits keys only. -@dangerous (after the categories)
# takes away what keys cannot bound: KEYS, FLUSHALL, FLUSHDB, CONFIG, DEBUG, ... The matcher needs
# +@transaction (MULTI/EXEC/WATCH) because GalleryStore.load reads the version and the people in one transaction.
ACL_RULES = {
    "admin": "~* &* +@all",
    "enroll": "resetkeys ~facestream:* resetchannels &facestream:* -@all +@read +@write +@transaction "
              "+@scripting +@connection +publish -@dangerous",
    "matcher": "resetkeys %R~facestream:* ~facestream:visits:* ~facestream:*:visits:* resetchannels &facestream:* "
               "-@all +@read +@connection +@transaction -@dangerous +subscribe +psubscribe +unsubscribe +punsubscribe +ping "
               "+eval +evalsha +set +del +expire +pexpire +scan",
}
ACL_FILE = SECRETS / "redis-users.acl"


def acl_text() -> str:
    lines = ["user default off resetpass nocommands resetkeys resetchannels"]
    for user, rules in ACL_RULES.items():
        digest = hashlib.sha256(password(f"redis-{user}").encode()).hexdigest()
        lines.append(f"user {user} on resetpass #{digest} {rules}")
    return "\n".join(lines) + "\n"


def server_args(mode: Mode) -> list[str]:
    logfile = REDIS_DIR / "redis.log"
    common = ["--bind", "127.0.0.1", "--daemonize", "no", "--logfile", str(logfile), "--dir", str(REDIS_DIR),
              # durability for the gallery: append-only file, fsync every second
              "--appendonly", "yes", "--save", ""]
    if not mode.redis_secure:
        return ["redis-server", "--port", str(mode.redis_port), *common]
    tls = ensure_tls()
    write_private(ACL_FILE, acl_text())
    return ["redis-server", "--port", "0", "--tls-port", str(mode.redis_port), "--tls-cert-file", str(tls.cert),
            "--tls-key-file", str(tls.key), "--tls-ca-cert-file", str(tls.ca), "--tls-auth-clients", "no",
            "--aclfile", str(ACL_FILE), *common]


def resp(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for p in parts:
        b = p.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def ping(mode: Mode) -> bool:
    """PING as a client would: over TLS, checked against the CA, logged in as admin when secure."""
    sock = socket.create_connection(("127.0.0.1", mode.redis_port), timeout=2)
    if mode.redis_secure:
        ctx = ssl.create_default_context(cafile=str(ensure_tls().ca))
        sock = ctx.wrap_socket(sock, server_hostname="127.0.0.1")
    with sock:
        if mode.redis_secure:
            sock.sendall(resp("AUTH", "admin", password("redis-admin")))
            if not sock.recv(64).startswith(b"+OK"):
                return False
        sock.sendall(resp("PING"))
        return sock.recv(16).startswith(b"+PONG")


def redis_up(mode: Mode) -> None:
    REDIS_DIR.mkdir(parents=True, exist_ok=True)
    pidfile, logfile = REDIS_DIR / "redis.pid", REDIS_DIR / "redis.log"
    if pid_alive(pidfile):
        log(f"redis already running (pid {pid_alive(pidfile)}) on 127.0.0.1:{mode.redis_port}")
        return
    refuse_taken([mode.redis_port], "set FACESTREAM_REDIS_PORT to another port")
    # not --daemonize: it runs in a session of its own and we keep its PID, as for Kafka
    launch(server_args(mode), REDIS_DIR, pidfile)
    wait_until(lambda: ping(mode), "redis", [(pidfile, logfile)])
    log(f"redis up on 127.0.0.1:{mode.redis_port}{' (TLS, ACL users)' if mode.redis_secure else ''} "
        f"(pid {pid_alive(pidfile)})")


def url(mode: Mode) -> str:
    return f"{'rediss' if mode.redis_secure else 'redis'}://127.0.0.1:{mode.redis_port}/0"
