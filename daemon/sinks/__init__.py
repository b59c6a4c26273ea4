"""Verdict sinks: stdout, JSON lines, webhook, Kafka."""
