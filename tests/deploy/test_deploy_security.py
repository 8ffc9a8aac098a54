"""Locked doors, as rendered: Kafka takes TLS with a SCRAM login only, and each service logs in as a
KafkaUser whose ACLs allow what it does and nothing more; Redis takes TLS only, with ACL users (the
default one off, the matcher read-only on the gallery); every password and key is a file from a mounted
Secret that no manifest contains, made by Strimzi or by deploy/k8s/secrets/make-secrets.sh."""
from __future__ import annotations

import fnmatch
import hashlib
import os
import pty
import re
import shlex
import subprocess
from urllib.parse import urlsplit

import pytest
import yaml

from deploy_k8s import (MAKE_SECRETS, OVERLAYS, PRODUCTION_OVERLAYS, REDIS_ACL_TEMPLATE, acl_lines, container,
                        env_values, facestream_deployments, group_id, kind, made_secrets, named, pod_spec,
                        referenced_secrets, render, secret_behind, secret_mounts, stage_of, strimzi_secrets, tool,
                        volume_secrets)
from services.matcher.gallery_store import DEFAULT_PREFIX as GALLERY
from services.matcher.visit_store import DEFAULT_PREFIX as VISITS
from shared import topics

KEDA_OVERLAYS = [o for o in OVERLAYS if o != "no-keda"]
STAGES = ("ingest", "detector", "embedder", "matcher")
# What each service reads and writes (the topics' defaults in services/<stage>: frames_topic, faces_topic,
# embeddings_topic, events_topic). Every consuming stage also dead-letters (shared/kafka_loop.py).
READS = {"ingest": [], "detector": [topics.FRAMES.name], "embedder": [topics.FACES.name],
         "matcher": [topics.EMBEDDINGS.name]}
WRITES = {"ingest": [topics.FRAMES.name], "detector": [topics.FACES.name, topics.DEAD_LETTER.name],
          "embedder": [topics.EMBEDDINGS.name, topics.DEAD_LETTER.name],
          "matcher": [topics.IDENTITY_EVENTS.name, topics.DEAD_LETTER.name]}
# KafkaUsers no manifest here logs in as: for subscribers of the identity events (services/events.py).
FOR_SUBSCRIBERS = {"facestream-events"}
KAFKA_SETTINGS = ("FACESTREAM_KAFKA_BOOTSTRAP", "FACESTREAM_KAFKA_SECURITY", "FACESTREAM_KAFKA_SASL_MECHANISM",
                  "FACESTREAM_KAFKA_USER", "FACESTREAM_KAFKA_PASSWORD_FILE", "FACESTREAM_KAFKA_CA_FILE")
# Where make-secrets.sh puts the passwords of the Redis users no manifest names (the others are found
# through the pods that log in with them).
PEOPLE_PASSWORDS = {"enroll": ("facestream-redis-enroll", "password"), "admin": ("facestream-redis-acl", "admin")}


def _kafka(docs) -> dict:
    (k,) = kind(docs, "Kafka")
    return k


def _deployment(docs, stage: str) -> dict:
    (d,) = [d for d in facestream_deployments(docs) if stage_of(d) == stage]
    return d


# --- Kafka: the listener and the brokers ------------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_kafka_listener_is_tls_with_a_scram_login(overlay):
    kafka = _kafka(render(overlay))["spec"]["kafka"]
    assert kafka["listeners"]
    for listener in kafka["listeners"]:
        assert listener["tls"] is True, f"listener {listener['name']} is plaintext"
        assert listener.get("authentication", {}).get("type") == "scram-sha-512", listener["name"]
    # Without an authorizer every authenticated user could do anything; with it, only what its ACLs allow.
    assert kafka["authorization"]["type"] == "simple"
    assert not kafka["authorization"].get("superUsers"), "a super user skips every ACL"


@pytest.mark.parametrize("overlay", PRODUCTION_OVERLAYS)
def test_three_replicas_and_two_in_sync_everywhere(overlay):
    docs = render(overlay)
    brokers = sum(p["spec"]["replicas"] for p in kind(docs, "KafkaNodePool") if "broker" in p["spec"]["roles"])
    assert brokers >= 3
    config = _kafka(docs)["spec"]["kafka"]["config"]
    for key, value in {"default.replication.factor": 3, "min.insync.replicas": 2,
                       "offsets.topic.replication.factor": 3, "transaction.state.log.replication.factor": 3,
                       "transaction.state.log.min.isr": 2}.items():
        assert int(config[key]) == value, key
    for t in kind(docs, "KafkaTopic"):
        assert t["spec"]["replicas"] == 3, t["metadata"]["name"]
        assert int(t["spec"]["config"]["min.insync.replicas"]) == 2, t["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_facestream_pods_and_keda_reach_the_listener(overlay):
    docs = render(overlay)
    (listener,) = _kafka(docs)["spec"]["kafka"]["listeners"]
    peers = listener["networkPolicyPeers"]
    assert all("ipBlock" not in p for p in peers)
    pod_peers = [p["podSelector"]["matchLabels"].items() for p in peers if "podSelector" in p]
    for d in facestream_deployments(docs):
        labels = d["spec"]["template"]["metadata"]["labels"].items()
        assert any(sel <= labels for sel in pod_peers), stage_of(d)
    namespaces = [p["namespaceSelector"]["matchLabels"] for p in peers if "namespaceSelector" in p]
    assert namespaces == ([{"kubernetes.io/metadata.name": "keda"}] if overlay in KEDA_OVERLAYS else [])
    assert all("podSelector" in p for p in peers if "namespaceSelector" not in p)


# --- Kafka: who logs in, and what each may do -------------------------------------------------------------

def _users(docs) -> dict[str, dict]:
    return {u["metadata"]["name"]: u for u in kind(docs, "KafkaUser")}


def _allows(user: dict, rtype: str, name: str, op: str) -> bool:
    """Whether a KafkaUser's ACLs allow `op` on a resource, as Kafka's StandardAuthorizer decides: literal
    or prefix names, and Describe implied by Read, Write, Delete and Alter."""
    for acl in user["spec"]["authorization"]["acls"]:
        res = acl["resource"]
        if acl.get("type", "allow") != "allow" or res["type"] != rtype:
            continue
        if rtype != "cluster":
            prefix = res.get("patternType", "literal") == "prefix"
            if not (name.startswith(res["name"]) if prefix else res["name"] in (name, "*")):
                continue
        ops = set(acl["operations"])
        if op in ops or "All" in ops or op == "Describe" and ops & {"Read", "Write", "Delete", "Alter"}:
            return True
    return False


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_logs_in_as_its_kafkauser_over_tls(overlay, stage):
    docs = render(overlay)
    d = _deployment(docs, stage)
    pod, c, env = pod_spec(d), container(d), env_values(docs, d)
    kafka = _kafka(docs)
    cluster = kafka["metadata"]["name"]
    assert {k for k in KAFKA_SETTINGS if k not in env} == set()
    host, port = env["FACESTREAM_KAFKA_BOOTSTRAP"].split(":")
    (listener,) = [li for li in kafka["spec"]["kafka"]["listeners"] if li["port"] == int(port)]
    assert host == f"{cluster}-kafka-bootstrap" and listener["tls"]
    assert env["FACESTREAM_KAFKA_SECURITY"] == "sasl_ssl"
    assert env["FACESTREAM_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512" == listener["authentication"]["type"].upper()
    user = _users(docs)[env["FACESTREAM_KAFKA_USER"]]   # a KafkaUser of that name exists...
    assert user["metadata"]["labels"]["strimzi.io/cluster"] == cluster
    assert user["spec"]["authentication"]["type"] == "scram-sha-512"
    # ... and the password is the file of the Secret Strimzi makes for it; the CA is the cluster CA's.
    assert secret_behind(pod, c, env["FACESTREAM_KAFKA_PASSWORD_FILE"]) == (user["metadata"]["name"], "password")
    assert secret_behind(pod, c, env["FACESTREAM_KAFKA_CA_FILE"]) == (f"{cluster}-cluster-ca-cert", "ca.crt")


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_kafkauser_may_do_its_service_s_work_and_nothing_else(overlay, stage):
    docs = render(overlay)
    d = _deployment(docs, stage)
    user = _users(docs)[env_values(docs, d)["FACESTREAM_KAFKA_USER"]]
    needed = set()
    for t in READS[stage]:
        assert _allows(user, "topic", t, "Read"), f"{stage} cannot read {t}"
        assert _allows(user, "group", group_id(d), "Read"), f"{stage} cannot join {group_id(d)}"
        needed |= {("topic", t), ("group", group_id(d))}
    for t in WRITES[stage]:
        assert _allows(user, "topic", t, "Write"), f"{stage} cannot write {t}"
        assert not _allows(user, "topic", t, "Read") or t in READS[stage], f"{stage} may read {t}, its output"
        needed.add(("topic", t))
    if stage == "matcher":
        needed.add(("transactionalId", "facestream-matcher"))
    granted = {(a["resource"]["type"], a["resource"].get("name")) for a in user["spec"]["authorization"]["acls"]}
    assert granted == needed, f"{stage}'s user may touch more than it uses"
    for acl in user["spec"]["authorization"]["acls"]:
        assert set(acl["operations"]) <= {"Read", "Write", "Describe"}, (stage, acl)
        assert acl["resource"].get("name") != "*"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_matcher_commits_in_transactions_under_an_id_it_may_use(overlay):
    docs = render(overlay)
    matcher = _deployment(docs, "matcher")
    env = container(matcher)["env"]
    names = [e["name"] for e in env]
    (pod_name,) = [e for e in env if e["name"] == "POD_NAME"]
    assert pod_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    (tid,) = [e for e in env if e["name"] == "FACESTREAM_TRANSACTIONAL_ID"]
    # $(POD_NAME) is expanded by the kubelet only when POD_NAME is defined earlier in the list.
    assert "$(POD_NAME)" in tid["value"] and names.index("POD_NAME") < names.index(tid["name"])
    user = _users(docs)[env_values(docs, matcher)["FACESTREAM_KAFKA_USER"]]
    resolved = tid["value"].replace("$(POD_NAME)", "facestream-matcher-7d9f8c6b5-x2x4q")
    assert _allows(user, "transactionalId", resolved, "Write")
    assert _allows(user, "transactionalId", resolved, "Describe")
    # offsets sent within the transaction are the group's
    assert _allows(user, "group", group_id(matcher), "Read")


@pytest.mark.parametrize("overlay", KEDA_OVERLAYS)
def test_keda_reads_the_lag_over_tls_as_a_describe_only_user(overlay):
    docs = render(overlay)
    cluster = _kafka(docs)["metadata"]["name"]
    for so in kind(docs, "ScaledObject"):
        (trigger,) = [t for t in so["spec"]["triggers"] if t["type"] == "kafka"]
        meta = trigger["metadata"]
        assert (meta["sasl"], meta["tls"]) == ("scram_sha512", "enable"), so["metadata"]["name"]
        auth = named(docs, trigger["authenticationRef"].get("kind", "TriggerAuthentication"),
                     trigger["authenticationRef"]["name"])["spec"]
        params = {r["parameter"]: named(docs, "ConfigMap", r["name"])["data"][r["key"]]
                  for r in auth.get("configMapTargetRef", [])}
        secrets = {r["parameter"]: (r["name"], r["key"]) for r in auth["secretTargetRef"]}
        user = _users(docs)[params["username"]]
        assert secrets["password"] == (params["username"], "password")
        assert secrets["ca"] == (f"{cluster}-cluster-ca-cert", "ca.crt")
        assert _allows(user, "topic", meta["topic"], "Describe")
        assert _allows(user, "group", meta["consumerGroup"], "Describe")
        for acl in user["spec"]["authorization"]["acls"]:
            assert acl["operations"] == ["Describe"], acl


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_kafkauser_belongs_to_the_cluster_and_is_used(overlay):
    docs = render(overlay)
    users = _users(docs)
    cluster = _kafka(docs)["metadata"]["name"]
    assert {u["metadata"]["labels"]["strimzi.io/cluster"] for u in users.values()} == {cluster}
    assert _kafka(docs)["spec"]["entityOperator"]["userOperator"] is not None
    used = {env_values(docs, d)["FACESTREAM_KAFKA_USER"] for d in facestream_deployments(docs)}
    for auth in kind(docs, "TriggerAuthentication"):
        used |= {named(docs, "ConfigMap", r["name"])["data"][r["key"]]
                 for r in auth["spec"].get("configMapTargetRef", []) if r["parameter"] == "username"}
    assert set(users) - used == FOR_SUBSCRIBERS, "a credential nobody uses"
    assert len(used) == len(facestream_deployments(docs)) + len(kind(docs, "TriggerAuthentication"))
    # `facestream events` joins a group of its own, facestream-events-<random> (services/events.py)
    events = users["facestream-events"]
    assert _allows(events, "topic", topics.IDENTITY_EVENTS.name, "Read")
    assert _allows(events, "group", "facestream-events-0a1b2c3d", "Read")
    assert not _allows(events, "topic", topics.IDENTITY_EVENTS.name, "Write")


# --- Redis ------------------------------------------------------------------------------------------------

def _redis(docs) -> tuple[dict, dict, dict]:
    """The Redis StatefulSet, its pod spec and its container."""
    redis = named(docs, "StatefulSet", "facestream-redis")
    return redis, pod_spec(redis), container(redis)


def _redis_conf(docs) -> dict[str, list[str]]:
    """redis.conf as the pod reads it: {directive: arguments}, from the ConfigMap mounted where the
    container's command points."""
    _, pod, c = _redis(docs)
    (path,) = [a for a in c["command"][1:] if a.endswith(".conf")]
    (mount,) = [m for m in c["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    text = named(docs, "ConfigMap", volume["configMap"]["name"])["data"][path.rsplit("/", 1)[1]]
    conf = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, *args = shlex.split(line)
            assert word.lower() not in conf, f"{word} twice in redis.conf"
            conf[word.lower()] = args
    return conf


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_redis_speaks_tls_only_and_reads_its_users_from_a_secret(overlay):
    docs = render(overlay)
    redis, pod, c = _redis(docs)
    conf = _redis_conf(docs)
    (service,) = [s for s in kind(docs, "Service") if s["metadata"]["name"] == redis["spec"]["serviceName"]]
    (port,) = c["ports"]
    assert conf["port"] == ["0"], "a plaintext port is open"
    assert int(conf["tls-port"][0]) == port["containerPort"] == service["spec"]["ports"][0]["port"]
    assert conf["tls-auth-clients"] == ["no"]   # clients log in with a password, not a certificate
    tls = {secret_behind(pod, c, conf[k][0]) for k in ("tls-cert-file", "tls-key-file", "tls-ca-cert-file")}
    assert tls == {("facestream-redis-tls", "tls.crt"), ("facestream-redis-tls", "tls.key"),
                   ("facestream-redis-tls", "ca.crt")}
    assert secret_behind(pod, c, conf["aclfile"][0]) == ("facestream-redis-acl", "users.acl")
    assert not {"requirepass", "masterauth", "include"} & set(conf)
    assert "env" not in c   # no password through the environment, not even for the probes


def _acl_users() -> dict[str, list[str]]:
    users = {}
    for words in acl_lines(REDIS_ACL_TEMPLATE.read_text()):
        assert words[0] == "user" and len(words) >= 2, words
        assert words[1] not in users, f"user {words[1]} twice"
        users[words[1]] = words[2:]
    return users


# The categories of the commands the checks below ask about (Redis 7.4, COMMAND INFO): enough to decide
# each user's permission the way Redis does, rule by rule from the left.
CATEGORIES = {
    "get": {"read", "string", "fast"}, "hget": {"read", "hash", "fast"}, "hgetall": {"read", "hash", "slow"},
    "smembers": {"read", "set", "slow"}, "scan": {"keyspace", "read", "slow"},
    "multi": {"fast", "transaction"}, "exec": {"slow", "transaction"},
    "subscribe": {"pubsub", "slow"}, "publish": {"pubsub", "fast"}, "ping": {"fast", "connection"},
    "eval": {"slow", "scripting"}, "set": {"write", "string", "slow"}, "del": {"keyspace", "write", "slow"},
    "expire": {"keyspace", "write", "fast"}, "hset": {"write", "hash", "fast"}, "sadd": {"write", "set", "fast"},
    "srem": {"write", "set", "fast"}, "incr": {"write", "string", "fast"},
    "flushall": {"keyspace", "write", "slow", "dangerous"}, "flushdb": {"keyspace", "write", "slow", "dangerous"},
    "swapdb": {"keyspace", "write", "fast", "dangerous"}, "keys": {"keyspace", "read", "slow", "dangerous"},
    "config": {"admin", "slow", "dangerous"}, "acl": {"admin", "slow", "dangerous"},
    "debug": {"admin", "slow", "dangerous"}, "shutdown": {"admin", "slow", "dangerous"},
    "client": {"admin", "slow", "dangerous", "connection"},   # client|kill, client|list
    "function": {"write", "slow", "scripting"},                # function|flush
}
KNOWN_CATEGORIES = {"keyspace", "read", "write", "set", "sortedset", "list", "hash", "string", "bitmap",
                    "hyperloglog", "geo", "stream", "pubsub", "admin", "fast", "slow", "blocking", "dangerous",
                    "connection", "transaction", "scripting", "all"}
KNOWN_COMMANDS = set(CATEGORIES) | {"discard", "unsubscribe", "evalsha", "pexpire"}
FLAGS = {"on", "off", "resetpass", "resetkeys", "resetchannels", "allkeys", "allchannels", "allcommands",
         "nocommands"}


def _may_run(rules: list[str], command: str) -> bool:
    allowed = False
    for r in rules:
        if r in ("+@all", "allcommands"):
            allowed = True
        elif r in ("-@all", "nocommands"):
            allowed = False
        elif r[:2] in ("+@", "-@") and r[2:] in CATEGORIES[command]:
            allowed = r[0] == "+"
        elif r[:1] in "+-" and r[1:2] != "@" and r[1:].lower() == command:
            allowed = r[0] == "+"
    return allowed


def _key_rules(rules: list[str]) -> list[tuple[str, str]]:
    """(R, W or RW, pattern) of each key rule: ~p and %RW~p read and write, %R~p reads, %W~p writes."""
    out = [("RW", "*")] if "allkeys" in rules else []
    for r in rules:
        if r.startswith("~"):
            out.append(("RW", r[1:]))
        elif r.startswith("%"):
            perms, _, pattern = r[1:].partition("~")
            out.append((perms.upper(), pattern))
    return out


def _may_key(rules: list[str], key: str, perm: str) -> bool:
    return any(perm in perms and fnmatch.fnmatchcase(key, pattern) for perms, pattern in _key_rules(rules))


def _may_channel(rules: list[str], channel: str) -> bool:
    return "allchannels" in rules or any(r.startswith("&") and fnmatch.fnmatchcase(channel, r[1:]) for r in rules)


def test_the_redis_acl_template_is_well_formed_and_holds_no_password():
    placeholder = re.compile(r"@[A-Z]+_SHA256@")
    for name, rules in _acl_users().items():
        for r in rules:
            assert (r in FLAGS or placeholder.fullmatch(r) or r.startswith(("~", "%R~", "%W~", "%RW~", "&"))
                    or r[:2] in ("+@", "-@") and r[2:] in KNOWN_CATEGORIES
                    or r[:1] in "+-" and r[1:].lower() in KNOWN_COMMANDS), f"{name}: unknown rule {r}"
            assert not r.startswith((">", "<", "#", "!")) and r != "nopass", f"{name}: a password in the template"
        if "on" in rules:
            assert len([r for r in rules if placeholder.fullmatch(r)]) == 1, f"{name} needs one password"


def test_redis_users_may_do_their_work_and_no_more():
    users = _acl_users()
    gallery_key, gallery_channel = f"{GALLERY}:people", f"{GALLERY}:changed"
    # default: off, and nothing even if it were on
    default = users["default"]
    assert "off" in default and "on" not in default
    assert not any(_may_run(default, c) for c in CATEGORIES) and not _key_rules(default)
    # matcher: reads the gallery in transactions and hears its changes; never writes it; keeps its visits
    matcher = users["matcher"]
    assert "on" in matcher
    for command in ("get", "hget", "hgetall", "smembers", "multi", "exec", "subscribe", "ping", "eval", "set",
                    "del", "expire", "scan"):
        assert _may_run(matcher, command), f"matcher cannot {command}"
    assert _may_key(matcher, gallery_key, "R") and not _may_key(matcher, gallery_key, "W")
    assert _may_channel(matcher, gallery_channel)
    assert _may_key(matcher, f"{VISITS}:entrance:alice", "W")
    # enroll: writes the gallery (MULTI/EXEC, and a script that INCRs and PUBLISHes the version), nothing else
    enroll = users["enroll"]
    for command in ("hset", "sadd", "srem", "del", "hget", "smembers", "multi", "exec", "eval", "incr", "publish"):
        assert _may_run(enroll, command), f"enroll cannot {command}"
    assert _may_key(enroll, gallery_key, "W") and _may_channel(enroll, gallery_channel)
    assert not _may_key(enroll, f"{VISITS}:entrance:alice", "R")
    # probe: PING only
    assert [c for c in CATEGORIES if _may_run(users["probe"], c)] == ["ping"]
    assert not _key_rules(users["probe"])
    # No one but admin runs a keyless command that would pass the key patterns by (FLUSHALL, KEYS ...).
    for name, rules in users.items():
        if name != "admin":
            for command in ("flushall", "flushdb", "swapdb", "keys", "config", "acl", "debug", "shutdown",
                            "client", "function"):
                assert not _may_run(rules, command), f"{name} may {command}"
            assert not _may_key(rules, "unrelated:key", "R"), f"{name} reaches keys outside facestream's"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_matcher_logs_in_to_redis_over_tls_as_matcher(overlay):
    docs = render(overlay)
    redis, _, _ = _redis(docs)
    (service,) = [s for s in kind(docs, "Service") if s["metadata"]["name"] == redis["spec"]["serviceName"]]
    matcher = _deployment(docs, "matcher")
    pod, c, env = pod_spec(matcher), container(matcher), env_values(docs, matcher)
    url = urlsplit(env["FACESTREAM_REDIS_URL"])
    assert url.scheme == "rediss" and url.username is None and url.password is None
    assert (url.hostname, url.port) == (service["metadata"]["name"], service["spec"]["ports"][0]["port"])
    assert env["FACESTREAM_REDIS_USER"] == "matcher" and "matcher" in _acl_users()
    assert secret_behind(pod, c, env["FACESTREAM_REDIS_PASSWORD_FILE"]) == ("facestream-redis-matcher", "password")
    ca = secret_behind(pod, c, env["FACESTREAM_REDIS_CA_FILE"])
    assert ca is not None and ca[1] == "ca.crt"
    # the CA from a Secret of its own: a client pod never references the one with Redis's private key
    assert "tls.key" not in made_secrets()[ca[0]]
    # Only the matcher talks to Redis inside the cluster.
    for d in facestream_deployments(docs):
        if d is not matcher:
            assert not {k for k in env_values(docs, d) if k.startswith("FACESTREAM_REDIS_") and k.endswith("_FILE")}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_redis_probe_logs_in_over_tls_as_probe(overlay):
    docs = render(overlay)
    _, pod, c = _redis(docs)
    (script,) = c["readinessProbe"]["exec"]["command"][2:]
    words = shlex.split(script)
    assert "--tls" in words and words[words.index("--user") + 1] == "probe"
    assert secret_behind(pod, c, words[words.index("--cacert") + 1]) == ("facestream-redis-tls", "ca.crt")
    (password_file,) = re.findall(r'REDISCLI_AUTH="\$\(cat (\S+)\)"', script)
    assert secret_behind(pod, c, password_file) == ("facestream-redis-acl", "probe")
    assert "-a" not in words and "--pass" not in words   # a password on a command line shows in ps
    assert c["livenessProbe"]["tcpSocket"]["port"] == c["ports"][0]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_matcher_reaches_redis(overlay):
    docs = render(overlay)
    redis, _, c = _redis(docs)
    labels = redis["spec"]["template"]["metadata"]["labels"].items()
    (policy,) = [p for p in kind(docs, "NetworkPolicy") if p["spec"]["podSelector"]["matchLabels"].items() <= labels]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == [c["ports"][0]["name"]]
    for peer in rule["from"]:
        assert set(peer) == {"podSelector"}, "only pods of this namespace"
        selector = peer["podSelector"]["matchLabels"].items()
        reached = [stage_of(d) for d in facestream_deployments(docs)
                   if selector <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert reached == ["matcher"], reached


# --- Secrets: references only, and what makes them --------------------------------------------------------

SECRET_TEXT = [
    re.compile(r"password\s*[=:]\s*\S", re.I),                      # password=..., password: ...
    re.compile(r"[a-z][a-z0-9+.-]*://[^\s/@:]*:[^\s/@]+@", re.I),   # redis://user:pass@host
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\brequirepass\b"),
    re.compile(r"sasl\.jaas\.config"),
    re.compile(r"(^|\s)(>|#)[0-9a-f]{16,}", re.M),                  # an ACL password or its hash
]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_in_any_rendered_manifest(overlay):
    docs = render(overlay)
    assert kind(docs, "Secret") == [], "Secrets are made by Strimzi and make-secrets.sh, never rendered"
    text = yaml.safe_dump_all(docs)
    for pattern in SECRET_TEXT:
        assert not pattern.search(text), f"{pattern.pattern} in the manifests of {overlay}"
    for d in kind(docs, "Deployment") + kind(docs, "StatefulSet"):
        pod = pod_spec(d)
        for c in pod["containers"] + pod.get("initContainers", []):
            for e in c.get("env", []):
                assert "secretKeyRef" not in e.get("valueFrom", {}), f"{d['metadata']['name']}: {e['name']}"
                assert not e["name"].endswith(("PASSWORD", "_AUTH")) or "value" not in e, e["name"]
            for mount, volume in secret_mounts(pod, c):
                assert mount.get("readOnly") is True, (d["metadata"]["name"], mount["name"])
                mode = (volume.get("secret") or volume.get("projected"))["defaultMode"]
                public = all(key == "ca.crt" for _, _, key in volume_secrets(volume))
                assert public or mode & 0o007 == 0, f"{d['metadata']['name']}: {mount['name']} is world-readable"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_secret_referenced_is_made_by_strimzi_or_make_secrets(overlay):
    docs = render(overlay)
    made = {(name, key) for name, data in made_secrets().items() for key in data}
    missing = referenced_secrets(docs) - strimzi_secrets(docs) - made
    assert missing == set(), "nothing makes these Secrets"
    # and make-secrets.sh makes nothing that no pod mounts, but the passwords meant for people, which no
    # pod mounts (a pod with the admin password could do anything to the gallery)
    assert set(PEOPLE_PASSWORDS.values()) & referenced_secrets(docs) == set()
    assert made - referenced_secrets(docs) == set(PEOPLE_PASSWORDS.values())


def test_make_secrets_passwords_are_the_ones_the_acl_file_hashes():
    secrets = made_secrets()
    acl = secrets["facestream-redis-acl"]["users.acl"].decode()
    users = {}
    for line in acl.splitlines():   # what Redis reads: `user` lines only, no comment, no placeholder left
        words = line.split()
        assert words[0] == "user", line
        users[words[1]] = words[2:]
    assert set(users) == set(_acl_users())
    # the passwords of the pods' users, found through the pods; the others where the script documents them
    docs = render("base")
    matcher = _deployment(docs, "matcher")
    _, pod, c = _redis(docs)
    (probe_file,) = re.findall(r'REDISCLI_AUTH="\$\(cat (\S+)\)"', c["readinessProbe"]["exec"]["command"][2])
    where = {"matcher": secret_behind(pod_spec(matcher), container(matcher),
                                      env_values(docs, matcher)["FACESTREAM_REDIS_PASSWORD_FILE"]),
             "probe": secret_behind(pod, c, probe_file), **PEOPLE_PASSWORDS}
    for name, rules in users.items():
        hashes = [r[1:] for r in rules if r.startswith("#")]
        if "on" not in rules:
            assert hashes == [], name
            continue
        secret, key = where[name]
        password = secrets[secret][key]
        assert len(password) >= 32 and password.strip() == password, name
        assert hashes == [hashlib.sha256(password).hexdigest()], f"{name}'s password does not match its hash"
    again = subprocess.run(["sh", str(MAKE_SECRETS)], capture_output=True, timeout=60, check=True).stdout
    assert secrets["facestream-redis-matcher"]["password"].decode() not in again.decode(), "not random"


def test_make_secrets_certificate_is_redis_s(tmp_path):
    openssl = tool("openssl")
    secrets = made_secrets()
    tls = secrets["facestream-redis-tls"]
    assert tls["ca.crt"] == secrets["facestream-redis-ca"]["ca.crt"]
    for key, value in tls.items():
        (tmp_path / key).write_bytes(value)

    def run(*args: str) -> str:
        return subprocess.run([openssl, *args], capture_output=True, text=True, check=True, timeout=30).stdout

    assert "OK" in run("verify", "-CAfile", str(tmp_path / "ca.crt"), str(tmp_path / "tls.crt"))
    assert run("pkey", "-in", str(tmp_path / "tls.key"), "-pubout") == \
        run("x509", "-in", str(tmp_path / "tls.crt"), "-pubkey", "-noout")
    # every name a client uses: the matcher's URL, the probe's host, and the Service in its namespace
    docs = render("base")
    redis, _, c = _redis(docs)
    host = urlsplit(env_values(docs, _deployment(docs, "matcher"))["FACESTREAM_REDIS_URL"]).hostname
    words = shlex.split(c["readinessProbe"]["exec"]["command"][2])
    namespace = redis["metadata"]["namespace"]
    for name in (host, words[words.index("-h") + 1], f"{host}.{namespace}.svc",
                 f"{redis['metadata']['name']}-0.{redis['spec']['serviceName']}.{namespace}.svc.cluster.local"):
        assert "does match" in run("x509", "-in", str(tmp_path / "tls.crt"), "-noout", "-checkhost", name), name


def test_make_secrets_refuses_to_print_to_a_terminal():
    leader, follower = pty.openpty()
    try:
        out = subprocess.run(["sh", str(MAKE_SECRETS)], stdout=follower, stderr=subprocess.PIPE, timeout=30)
    finally:
        os.close(follower)
        os.close(leader)
    assert out.returncode == 2 and b"kubectl create" in out.stderr
