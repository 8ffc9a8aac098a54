"""The Kubernetes Redis's users on a real Redis: the ACL file and TLS certificate that
deploy/k8s/secrets/make-secrets.sh makes, loaded by Debian's redis-server (7.0, built with TLS) started with
the directives of deploy/k8s/base/redis/redis.conf (TLS only, no plaintext port, aclfile), its paths moved to
a temporary folder, its port a free loopback one, without persistence. tests/deploy/ checks the same files
offline; here Redis itself decides. Every client goes through services/redis_access.py `client` over
rediss://, verified against the generated CA, as the services connect. A server that does not start fails
the test with its log. No other server is used or touched.
"""
from __future__ import annotations

import hashlib
import shlex
import socket
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import redis

from services.matcher.gallery_store import DEFAULT_PREFIX as GALLERY, GalleryStore
from services.matcher.live_index import LiveIndex
from services.matcher.visit_records import CLAIMED, STORED, Visit
from services.matcher.visit_store import DEFAULT_PREFIX as VISITS, RedisVisitStore
from services.redis_access import client
from tests.deploy.deploy_k8s import K8S, acl_lines, made_secrets, tool

pytestmark = pytest.mark.integration

REDIS_CONF = K8S / "base" / "redis" / "redis.conf"
USERS = ("matcher", "enroll", "probe", "admin")
HOST = "127.0.0.1"       # the certificate names it (checked below); the server listens on it alone
MODEL = "acl-test-model"
DIM = 16
START_TIMEOUT_S = 10.0


def conf_directives(path: Path = REDIS_CONF) -> list[tuple[str, list[str]]]:
    """(directive, arguments) of every line of a redis.conf, in order, quotes undone as Redis does."""
    out = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            words = shlex.split(line)
            out.append((words[0].lower(), words[1:]))
    return out


def san_names(cert: Path) -> set[str]:
    """The subjectAltName entries of a PEM certificate, e.g. {"DNS:localhost", "IP Address:127.0.0.1"}."""
    out = subprocess.run([tool("openssl"), "x509", "-noout", "-ext", "subjectAltName", "-in", str(cert)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    return {n.strip() for line in lines[1:] for n in line.split(",") if n.strip()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def unit(i: int) -> np.ndarray:
    v = np.zeros(DIM, np.float32)
    v[i % DIM] = 1.0
    return v


def visit(identity: str | None = "Ann", camera: str = "door", last_seen: float = 100.0, gap_s: float = 60.0) -> Visit:
    vid = uuid.uuid4().hex
    return Visit(vid, camera, identity, 90.0, last_seen, 12, "e-" + vid, 0.93, "door-t-0", (1.0, 2.0, 3.0, 4.0),
                 "m1", gap_s)


class Server:
    def __init__(self, url: str, port: int, ca: Path, passwords: dict[str, str], acl: str, log: Path):
        self.url, self.port, self.ca, self.passwords, self.acl, self.log = url, port, ca, passwords, acl, log

    def as_(self, user: str, **kw) -> redis.Redis:
        """A client logged in as `user`, the services' way (services/redis_access.py)."""
        return client(self.url, user=user, password=self.passwords[user], ca_file=str(self.ca), **{"timeout_s": 5.0, **kw})

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def server_args(tmp: Path, port: int) -> list[str]:
    """redis.conf's directives as redis-server's arguments, every one kept except what cannot be the same
    here: the files come from `tmp`, the TLS port is `port` on loopback, and nothing is persisted."""
    files = {"tls-cert-file": tmp / "tls.crt", "tls-key-file": tmp / "tls.key", "tls-ca-cert-file": tmp / "ca.crt",
             "aclfile": tmp / "users.acl", "dir": tmp}
    replace = {"bind": [HOST], "tls-port": [str(port)], "appendonly": ["no"], "save": [""]}
    drop = {"appendfsync"}  # meaningless without the append-only file
    args, seen = [], set()
    for name, values in conf_directives():
        seen.add(name)
        if name in drop:
            continue
        if name in files:
            values = [str(files[name])]
        args += [f"--{name}", *replace.get(name, values)]
    # the directives that make it the Kubernetes Redis: a conf without them is not tested here
    for name in ("port", "tls-port", "tls-cert-file", "tls-key-file", "tls-ca-cert-file", "tls-auth-clients",
                 "aclfile"):
        assert name in seen, f"{REDIS_CONF} has no {name}"
    return [*args, "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", ""]


@pytest.fixture
def server(tmp_path) -> Server:
    secrets = made_secrets()   # make-secrets.sh, run once per session (lru_cache)
    tls, acl = secrets["facestream-redis-tls"], secrets["facestream-redis-acl"]
    for name in ("tls.crt", "tls.key", "ca.crt"):
        (tmp_path / name).write_bytes(tls[name])
        (tmp_path / name).chmod(0o600)
    assert secrets["facestream-redis-ca"]["ca.crt"] == tls["ca.crt"]
    (tmp_path / "users.acl").write_bytes(acl["users.acl"])
    passwords = {"matcher": secrets["facestream-redis-matcher"]["password"],
                 "enroll": secrets["facestream-redis-enroll"]["password"],
                 "probe": acl["probe"], "admin": acl["admin"]}
    passwords = {u: p.decode() for u, p in passwords.items()}

    names = san_names(tmp_path / "tls.crt")
    assert {"DNS:localhost", "IP Address:127.0.0.1"} <= names, names

    conf = dict(conf_directives())
    assert conf["port"] == ["0"], "the Kubernetes Redis has no plaintext port"
    port = free_port()
    log = tmp_path / "redis.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([tool("redis-server"), *server_args(tmp_path, port)], cwd=tmp_path,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    srv = Server(f"rediss://{HOST}:{port}/0", port, tmp_path / "ca.crt", passwords, acl["users.acl"].decode(), log)
    try:
        deadline, last = time.monotonic() + START_TIMEOUT_S, None
        while True:
            if proc.poll() is not None:
                pytest.fail(f"redis-server exited with status {proc.returncode} at start:\n{srv.log_tail()}")
            try:
                with srv.as_("probe", timeout_s=1.0, retries=0) as probe:
                    assert probe.ping()
                break
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as e:
                last = e   # not listening yet (an AuthenticationError is a ConnectionError too: retried)
            except redis.exceptions.ResponseError as e:
                pytest.fail(f"redis-server refused the probe's PING ({e!r}):\n{srv.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"redis-server did not answer the probe in {START_TIMEOUT_S} s ({last!r}):\n"
                            f"{srv.log_tail()}")
            time.sleep(0.05)
        yield srv
    finally:
        proc.kill()
        proc.wait(10)


def refused(call, *args, **kw) -> str:
    """The NOPERM message of a command that the ACL refuses (the test fails if it is not refused)."""
    with pytest.raises(redis.exceptions.NoPermissionError) as e:
        call(*args, **kw)
    return str(e.value)


# --- the server and its file ------------------------------------------------------------------------------
def test_redis_loaded_the_acl_file_and_speaks_tls_only(server):
    with server.as_("admin") as admin:
        assert admin.acl_whoami() == "admin"
        listed = {line.split()[1]: line.split() for line in map(bytes.decode, admin.execute_command("ACL", "LIST"))}
        assert set(listed) == {"default", *USERS}
        assert set(listed) == {words[1] for words in acl_lines(server.acl)}, "every user of the file, no other"
        assert "off" in listed["default"] and "on" not in listed["default"]
        for user in USERS:
            assert "on" in listed[user], listed[user]
            # Redis keeps the hash that make-secrets.sh wrote, of the password it wrote into the Secret
            assert "#" + hashlib.sha256(server.passwords[user].encode()).hexdigest() in listed[user], user
        assert admin.config_get("port") == {"port": "0"}, "no plaintext port"
        assert admin.config_get("tls-port") == {"tls-port": str(server.port)}
        conf = dict(conf_directives())
        for name in ("tls-auth-clients", "tls-protocols", "maxmemory-policy"):   # as the pod's Redis runs
            assert admin.config_get(name)[name] == conf[name][0], name
        assert admin.config_get("aclfile")["aclfile"].endswith("users.acl")


def test_a_client_must_log_in_and_speak_tls(server):
    with client(server.url, ca_file=str(server.ca), timeout_s=2.0, retries=0) as anonymous:
        with pytest.raises(redis.exceptions.AuthenticationError, match="NOAUTH|[Aa]uthentication"):
            anonymous.ping()
    with client(server.url, user="matcher", password="wrong", ca_file=str(server.ca), timeout_s=2.0,
                retries=0) as wrong:
        with pytest.raises(redis.exceptions.AuthenticationError):
            wrong.ping()
    with client(server.url, user="default", password="", ca_file=str(server.ca), timeout_s=2.0, retries=0) as d:
        with pytest.raises(redis.exceptions.AuthenticationError):
            d.ping()
    with client(f"redis://{HOST}:{server.port}/0", user="admin", password=server.passwords["admin"],
                timeout_s=2.0, retries=0) as plain:
        with pytest.raises((redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
            plain.ping()
    # the certificate is checked: a CA of its own is not trusted by default
    with client(server.url, user="probe", password=server.passwords["probe"], timeout_s=2.0, retries=0) as other:
        with pytest.raises(redis.exceptions.ConnectionError, match="(?i)certificate"):
            other.ping()


# --- each user's rights ------------------------------------------------------------------------------------
def test_matcher_reads_the_gallery_keeps_visits_and_nothing_else(server):
    people, person, emb, version = (f"{GALLERY}:{k}" for k in ("people", "person:Ann", "emb:Ann", "version"))
    with server.as_("admin") as admin:
        admin.sadd(people, "Ann")
        admin.hset(person, "meta", "{}")
        admin.hset(emb, "e1", unit(0).tobytes())
        admin.set(version, 7)
    with server.as_("matcher") as m:
        assert m.ping()
        assert m.get(version) == b"7"
        assert m.smembers(people) == {b"Ann"}
        assert m.hgetall(emb) == {b"e1": unit(0).tobytes()}
        assert m.hget(person, "meta") == b"{}"
        with m.pipeline(transaction=True) as pipe:    # MULTI/EXEC of a read, as GalleryStore.load does it
            pipe.get(version)
            pipe.smembers(people)
            assert pipe.execute() == [b"7", {b"Ann"}]

        pubsub = m.pubsub()
        try:
            pubsub.subscribe(f"{GALLERY}:changed")
            msg = pubsub.get_message(timeout=2.0)
            assert msg and msg["type"] == "subscribe" and msg["channel"] == f"{GALLERY}:changed".encode()
            with server.as_("admin") as admin:
                admin.publish(f"{GALLERY}:changed", 8)
            deadline = time.monotonic() + 3.0
            got = None
            while got is None and time.monotonic() < deadline:
                got = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            assert got and got["data"] == b"8"
        finally:
            pubsub.close()

        key = f"{VISITS}:door:{uuid.uuid4().hex[:16]}"
        assert m.set(key, "v", px=60_000)
        assert m.get(key) == b"v"
        assert m.expire(key, 30) and 0 < m.ttl(key) <= 30
        assert m.pexpire(key, 20_000)
        assert m.eval("return redis.call('GET', KEYS[1])", 1, key) == b"v"
        assert m.eval("redis.call('SET', KEYS[1], ARGV[1]) return 1", 1, key, "w") == 1
        assert m.get(key) == b"w"
        assert list(m.scan_iter(match=f"{VISITS}:*")) == [key.encode()]
        assert m.delete(key) == 1

        # the gallery is read-only to it, directly and from a script
        refused(m.hset, emb, "e2", b"x")
        refused(m.sadd, people, "Bob")
        refused(m.delete, emb)
        refused(m.set, version, 99)
        refused(m.incr, version)
        refused(m.publish, f"{GALLERY}:changed", 1)
        with pytest.raises(redis.exceptions.ResponseError, match="(?i)noperm|permission"):
            m.eval("return redis.call('SADD', KEYS[1], 'Bob')", 1, people)
        # no key or channel outside its patterns, no keyless command that touches every key
        refused(m.get, "other:key")
        refused(m.set, "other:key", 1)
        refused(m.flushall)
        refused(m.flushdb)
        refused(m.keys, "*")
        refused(m.config_get, "*")
        refused(m.execute_command, "SWAPDB", 0, 1)
        refused(m.execute_command, "CLIENT", "KILL", "TYPE", "normal")
        refused(m.execute_command, "SCRIPT", "FLUSH")
        pubsub = m.pubsub()
        try:
            with pytest.raises(redis.exceptions.NoPermissionError):
                pubsub.subscribe("other:channel")
                pubsub.get_message(timeout=1.0)
        finally:
            pubsub.close()
    with server.as_("admin") as admin:
        assert admin.smembers(people) == {b"Ann"} and admin.get(version) == b"7", "nothing changed by the matcher"


def test_enroll_writes_the_gallery_the_way_gallery_store_does_and_nothing_else(server):
    with server.as_("enroll") as e:
        store = GalleryStore(e)
        assert store.add("Pat_Tester", {"e1": unit(3)}, MODEL, ["synthetic"]) == 1
        assert store.add("Pat_Tester", {"e2": unit(4)}, MODEL, ["more"]) == 2
        assert store.add("Pat_Tester", {"e3": unit(5)}, MODEL, ["again"], replace=True) == 3
        assert [(p.name, p.embeddings, p.model_version) for p in store.people()] == [("Pat_Tester", 1, MODEL)]
        version, people, skipped = store.load(MODEL)
        assert version == 3 and list(people) == ["Pat_Tester"] and skipped == []
        assert store.remove("Pat_Tester") is True
        assert store.remove("Pat_Tester") is False
        assert store.version() == 5 and store.people() == []
        refused(e.flushall)
        refused(e.flushdb)
        refused(e.config_get, "*")
        refused(e.execute_command, "CONFIG", "SET", "appendonly", "no")
        refused(e.keys, "*")
        refused(e.set, f"{VISITS}:door:x", 1)
        refused(e.get, "other:key")
        refused(e.execute_command, "FUNCTION", "FLUSH")
    with server.as_("admin") as admin:
        assert not [k for k in admin.scan_iter("*") if not k.startswith(GALLERY.encode() + b":")]


def test_probe_may_ping_and_nothing_else(server):
    with server.as_("probe") as p:
        assert p.ping()
        refused(p.get, f"{GALLERY}:version")
        refused(p.set, "x", 1)
        refused(p.execute_command, "INFO")
        refused(p.config_get, "*")


# --- the matcher's own code under its user ------------------------------------------------------------------
def test_the_matchers_gallery_reader_works_as_matcher(server):
    with server.as_("enroll") as e:
        GalleryStore(e).add("Pat_Tester", {"e1": unit(3)}, MODEL, ["synthetic"])
        GalleryStore(e).add("Old_Model", {"e1": unit(6)}, "another-model", ["synthetic"])
    with server.as_("matcher") as m:
        store = GalleryStore(m)
        store.ping()
        assert store.version() == 2
        version, people, skipped = store.load(MODEL)
        assert version == 2 and skipped == ["Old_Model"]
        assert list(people) == ["Pat_Tester"] and np.array_equal(people["Pat_Tester"], unit(3)[None])
        assert store.person_meta("Pat_Tester")["model_version"] == MODEL
        assert {p.name for p in store.people()} == {"Pat_Tester", "Old_Model"}
        with pytest.raises(redis.exceptions.NoPermissionError):
            store.add("Intruder", {"e1": unit(1)}, MODEL, ["x"])
        with pytest.raises(redis.exceptions.NoPermissionError):
            store.remove("Pat_Tester")
        assert store.version() == 2

        pubsub = store.subscribe()       # its own connection, as matcher too
        try:
            with server.as_("enroll") as e:
                assert GalleryStore(e).add("Sam_Tester", {"e1": unit(7)}, MODEL, ["synthetic"]) == 3
            deadline, got = time.monotonic() + 3.0, None
            while got is None and time.monotonic() < deadline:
                got = pubsub.get_message(timeout=0.5)
            assert got and got["channel"] == store.channel.encode() and got["data"] == b"3"
        finally:
            pubsub.close()

        # the whole sync loop of the matcher (services/matcher/live_index.py): subscribe, load, reload when told
        index = LiveIndex(store, MODEL, check_interval_s=60.0, where=server.url).start()
        try:
            assert index.loaded.wait(5.0) and index.up
            assert index().version == 3 and sorted(index().names) == ["Pat_Tester", "Sam_Tester"]
            time.sleep(0.2)   # subscribed and waiting: the notification, not the 60 s check, brings the change
            with server.as_("enroll") as e:
                assert GalleryStore(e).remove("Sam_Tester")
            deadline = time.monotonic() + 5.0
            while index().version != 4 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert index().version == 4 and list(index().names) == ["Pat_Tester"]
        finally:
            index.close()

        # a large gallery is read and built by a child process: the same login and TLS reach it on its stdin
        from services.matcher.index import GalleryIndex
        from services.matcher.index_process import load_index

        child, skipped = load_index(store, MODEL)
        version, people, other_model = store.load(MODEL)
        assert child.version == version == 4 and child.names == ["Pat_Tester"] and skipped == other_model
        assert np.array_equal(child.matrix, GalleryIndex.build(people, version, MODEL).matrix)
        assert child.search(unit(1)[None])[0] == ["Pat_Tester"]


def test_the_matchers_visit_store_works_as_matcher(server):
    # as services/matcher/main.py builds it: short timeouts, no retries, the default prefix
    with server.as_("matcher", timeout_s=1.0, retries=0) as m:
        store = RedisVisitStore(m, VISITS)
        v, u = visit(), visit(identity=None, gap_s=2.0)
        assert store.put([(v, False), (u, False)]) == [STORED, STORED]
        got = store.get("door", "Ann")
        assert got is not None and got.to_json() == v.to_json()
        assert store.get("door", "Bob") is None
        assert {x.visit_id for x in store.scan_expired(1e9)} == {v.visit_id, u.visit_id}
        assert not store.claim_end(v, 159.0), "not expired yet"
        claimed = store.claim_end(v, 160.5)        # EVALSHA, NOSCRIPT, then EVAL
        assert claimed and claimed.visit_id == v.visit_id
        assert not store.claim_end(v, 160.5)       # EVALSHA of a cached script
        assert store.put([(v, True)]) == [CLAIMED]
        assert store.claim_end(u, None)
        assert store.get("door", "Ann") is None and store.scan_expired(1e9) == []
        assert store._refused == set(), "no command of the visit store was refused"
