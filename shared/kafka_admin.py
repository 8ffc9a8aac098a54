"""Topic and group administration: the one place that creates and deletes topics, for `make up`, the
benchmarks and the tests alike.

    create_topics(bootstrap, {"frames": 12}, retention_ms={"frames": 600_000})   # existing ones are left as they are
    create_topics(bootstrap, {"frames": 12}, replication=3, min_insync=2, **security)
    delete_topics(bootstrap, ["frames-1a2b"])

Every function takes extra KafkaAdminClient keyword arguments (`**client`) and passes them through: the
security of a secured cluster (security_protocol="SASL_SSL", sasl_mechanism, sasl_plain_username,
sasl_plain_password, ssl_cafile, ...) or timeouts.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from kafka import KafkaAdminClient
from kafka.admin import NewTopic


def topic_configs(name: str, retention_ms: Mapping[str, int] | None, min_insync: int | None) -> dict[str, str]:
    configs = {}
    if retention_ms and name in retention_ms:
        configs["retention.ms"] = str(retention_ms[name])
    if min_insync is not None:  # with acks=all, how many replicas must have a write: 2 of 3 survives one loss
        configs["min.insync.replicas"] = str(min_insync)
    return configs


def create_topics(bootstrap: str, partitions: Mapping[str, int], *, replication: int = 1,
                  retention_ms: Mapping[str, int] | None = None, min_insync: int | None = None,
                  **client: Any) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, **client)
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(name, n, replication, topic_configs=topic_configs(name, retention_ms, min_insync))
               for name, n in partitions.items() if name not in existing]
        if new:
            admin.create_topics(new)
        return [t.name for t in new]
    finally:
        admin.close()


def delete_topics(bootstrap: str, names: Iterable[str], **client: Any) -> None:
    names = list(names)
    if not names:
        return
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, **client)
    try:
        admin.delete_topics(names)
    finally:
        admin.close()


def delete_groups(bootstrap: str, groups: Iterable[str], **client: Any) -> None:
    """Remove consumer groups a run made (they hold committed offsets of deleted topics otherwise). A group
    with a member still leaving is refused; it expires on its own, so that is not an error."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, **client)
    try:
        admin.delete_groups(list(groups))
    except Exception:
        pass
    finally:
        admin.close()
