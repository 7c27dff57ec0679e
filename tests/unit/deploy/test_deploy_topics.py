"""The topic script creates exactly the topics and partition counts of shared/topics.py, kept as documented."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from shared import topics
from tests.unit.deploy.deploy_files import K8S_DIR, TOPICS_SCRIPT, k8s_object, load_k8s, scripted_topics

DAY_MS = 24 * 3600 * 1000


def test_script_creates_the_topics_of_shared_topics_with_their_partition_counts() -> None:
    scripted = scripted_topics(TOPICS_SCRIPT.read_text())
    assert {name: partitions for name, (partitions, _) in scripted.items()} == topics.topic_partitions()


def test_lifecycle_is_kept_for_rebuilds_and_dead_letters_for_weeks() -> None:
    scripted = scripted_topics(TOPICS_SCRIPT.read_text())
    lifecycle_retention = scripted[topics.LIFECYCLE][1]
    # Reporting is rebuilt from the lifecycle topic: keep it forever (-1) or at least years.
    assert lifecycle_retention == -1 or lifecycle_retention >= 3 * 365 * DAY_MS
    assert 7 * DAY_MS <= scripted[topics.DEAD_LETTER][1] <= 365 * DAY_MS


def test_kubernetes_job_runs_the_same_script() -> None:
    config_map = k8s_object(load_k8s(), "ConfigMap", "hazard-kafka-init")
    assert config_map["data"]["create-topics.sh"] == TOPICS_SCRIPT.read_text(), (
        f"{K8S_DIR.name}/10-config.yaml hazard-kafka-init must hold deploy/kafka/create-topics.sh verbatim"
    )


def test_script_asks_kafka_for_each_topic_with_replication_and_min_insync(tmp_path: Path) -> None:
    # A stand-in kafka-topics.sh records its arguments: what the real one would be asked to do.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    calls = tmp_path / "calls"
    (fake_bin / "kafka-topics.sh").write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    (fake_bin / "kafka-topics.sh").chmod(0o755)
    env = {**os.environ, "KAFKA_BIN": str(fake_bin), "KAFKA_BOOTSTRAP": "k1:9092", "REPLICATION_FACTOR": "3"}
    env.pop("MIN_INSYNC_REPLICAS", None)
    result = subprocess.run(["sh", str(TOPICS_SCRIPT)], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    creates = [line.split() for line in calls.read_text().splitlines() if "--create" in line]
    assert len(creates) == len(topics.topic_partitions())
    for args, (name, partitions) in zip(creates, topics.topic_partitions().items(), strict=True):
        assert args[args.index("--bootstrap-server") + 1] == "k1:9092"
        assert args[args.index("--topic") + 1] == name
        assert args[args.index("--partitions") + 1] == str(partitions)
        assert args[args.index("--replication-factor") + 1] == "3"
        assert "--if-not-exists" in args
        configs = [args[i + 1] for i, a in enumerate(args) if a == "--config"]
        assert "min.insync.replicas=2" in configs  # the production default
        assert any(c.startswith("retention.ms=") for c in configs)
