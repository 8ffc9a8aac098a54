"""Topic and group administration: the one place that creates and deletes topics, for `make up`, the
benchmarks and the tests alike.

    create_topics(bootstrap, {"frames": 12}, retention_ms={"frames": 600_000})   # existing ones are left as they are
    delete_topics(bootstrap, ["frames-1a2b"])
"""
from __future__ import annotations

from typing import Iterable, Mapping

from kafka import KafkaAdminClient
from kafka.admin import NewTopic


def create_topics(bootstrap: str, partitions: Mapping[str, int], *, replication: int = 1,
                  retention_ms: Mapping[str, int] | None = None) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(name, n, replication,
                        topic_configs={"retention.ms": str(retention_ms[name])} if retention_ms and name in retention_ms
                        else {})
               for name, n in partitions.items() if name not in existing]
        if new:
            admin.create_topics(new)
        return [t.name for t in new]
    finally:
        admin.close()


def delete_topics(bootstrap: str, names: Iterable[str]) -> None:
    names = list(names)
    if not names:
        return
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_topics(names)
    finally:
        admin.close()


def delete_groups(bootstrap: str, groups: Iterable[str]) -> None:
    """Remove consumer groups a run made (they hold committed offsets of deleted topics otherwise). A group
    with a member still leaving is refused; it expires on its own, so that is not an error."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_groups(list(groups))
    except Exception:
        pass
    finally:
        admin.close()
