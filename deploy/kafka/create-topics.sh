#!/usr/bin/env bash
# Creates fakewatch's topics once. Never change the partition count of a live frames topic:
# keys (stream ids) would map to other partitions and per-stream state would split.
set -euo pipefail
K=/opt/kafka/bin/kafka-topics.sh
B=kafka:9092
$K --bootstrap-server $B --create --if-not-exists --topic frames --partitions 6 --replication-factor 1 --config retention.ms=3600000
$K --bootstrap-server $B --create --if-not-exists --topic verdicts --partitions 6 --replication-factor 1
$K --bootstrap-server $B --create --if-not-exists --topic frames.dlq --partitions 1 --replication-factor 1
$K --bootstrap-server $B --create --if-not-exists --topic fakewatch.state --partitions 6 --replication-factor 1 --config cleanup.policy=compact
