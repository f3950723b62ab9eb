"""`etl-gate topics` on the real broker: creates, is idempotent, sets retention."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from .helpers import ROOT, GateEnv

pytestmark = pytest.mark.integration


def test_topics_created_idempotently_with_retention_from_ttl(kafka_bootstrap: str,
                                                             tmp_path: Path) -> None:
    env = GateEnv(kafka_bootstrap, tmp_path, partitions=3,
                  extra_toml="[ttl_days]\nP0 = 400\nP1 = 30\nP2 = 7\n")
    cmd = [sys.executable, "-m", "etl_gate", "topics", "--config", str(env.config_path)]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True).stdout
    second = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True).stdout
    names = [env.cfg.kafka.input_topic, *env.output_topics]
    assert sorted(first.splitlines()) == sorted(f"{n}: created" for n in names)
    assert sorted(second.splitlines()) == sorted(f"{n}: exists" for n in names)

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    md = admin.list_topics(timeout=10)
    assert all(len(md.topics[n].partitions) == 3 for n in names)
    day = 86_400_000
    resources = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in env.cfg.topics.priority_topics]
    for res, fut in admin.describe_configs(resources).items():
        retention = int(fut.result(timeout=10)["retention.ms"].value)
        prio = env.cfg.topics.priority_topics.index(res.name)
        assert retention == (400, 30, 7)[prio] * day
