"""Kafka integration: frames in (consumer group), verdicts out, at-least-once, state topic.

- :mod:`daemon.kafka.config`: :class:`KafkaConfig` (bootstrap, topics, group, security, ...).
- :mod:`daemon.kafka.contract`: the frame message contract (headers, encode/decode, dead letters).
- :mod:`daemon.kafka.state`: per-stream temporal state snapshots in a compacted topic.
- :mod:`daemon.sources.kafka` / :mod:`daemon.sinks.kafka`: the source and the sink.
- :mod:`daemon.kafka.tools`: ``produce`` and ``verdicts`` CLI subcommands.

See ``docs/kafka.md``.
"""
