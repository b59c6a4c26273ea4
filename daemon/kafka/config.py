"""Configuration of the Kafka source, sink and state topic.

Secrets (SASL and SSL key passwords) are :class:`pydantic.SecretStr`: they print as ``**********``
in reprs, logs and dumps, and are revealed only when building client keyword arguments.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator

from daemon.config_base import StrictModel


class KafkaSecurity(StrictModel):
    """Transport security and authentication (maps onto aiokafka's client arguments)."""

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_key_password: SecretStr | None = None
    ssl_check_hostname: bool = True

    @model_validator(mode="after")
    def _check(self) -> "KafkaSecurity":
        if self.protocol.startswith("SASL"):
            if not self.sasl_mechanism:
                raise ValueError(f"kafka security protocol {self.protocol} needs sasl_mechanism")
            if not self.sasl_username or self.sasl_password is None:
                raise ValueError(f"kafka security protocol {self.protocol} needs sasl_username and sasl_password")
        return self

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka clients. Never log the result: it holds the secrets."""
        kw: dict[str, Any] = {"security_protocol": self.protocol}
        if self.protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            kw["ssl_context"] = create_ssl_context(
                cafile=self.ssl_cafile,
                certfile=self.ssl_certfile,
                keyfile=self.ssl_keyfile,
                password=self.ssl_key_password.get_secret_value() if self.ssl_key_password else None,
                check_hostname=self.ssl_check_hostname,
            )
        if self.protocol.startswith("SASL"):
            kw["sasl_mechanism"] = self.sasl_mechanism
            kw["sasl_plain_username"] = self.sasl_username
            kw["sasl_plain_password"] = self.sasl_password.get_secret_value() if self.sasl_password else None
        return kw


class KafkaConfig(StrictModel):
    """Kafka frames source + verdict sink + state topic settings.

    ``intake_high``/``intake_low``: frames fetched but not yet done (queued or in the pipeline);
    above ``intake_high`` every assigned partition is paused (the consumer keeps polling, so it
    stays in the group), below ``intake_low`` they resume.
    """

    bootstrap_servers: list[str] = Field(default_factory=lambda: ["127.0.0.1:9092"], min_length=1)
    frames_topics: list[str] = Field(default_factory=lambda: ["fakewatch.frames"], min_length=1)
    group_id: str = "fakewatch"
    group_instance_id: str | None = None  # static membership: a restart within the session timeout keeps the assignment
    auto_offset_reset: Literal["latest", "earliest"] = "latest"
    freshness_budget_s: float | None = Field(5.0, gt=0)  # None: never drop for age (replay / moderation)
    max_payload_bytes: int = Field(1_000_000, gt=0)
    intake_high: int = Field(64, ge=1)
    intake_low: int = Field(16, ge=0)
    dead_letter_topic: str | None = "fakewatch.frames.dlq"
    verdict_topic: str = "fakewatch.verdicts"
    state_topic: str | None = "fakewatch.state"  # compacted; None disables state hand-over
    transactional: bool = False  # verdicts + offsets in one transaction (broker must support transactions)
    transactional_id: str | None = None  # default: "<client_id>-<group_instance_id or group_id>"
    security: KafkaSecurity = Field(default_factory=KafkaSecurity)
    client_id: str = "fakewatch"
    consumer_client_id: str | None = None
    producer_client_id: str | None = None
    # loop tuning
    commit_interval_s: float = Field(0.5, gt=0)
    drain_timeout_s: float = Field(10.0, ge=0)  # bound on finishing in-flight frames when partitions are revoked
    poll_timeout_ms: int = Field(200, gt=0)
    max_poll_records: int = Field(64, ge=1)
    session_timeout_ms: int = Field(10000, gt=0)
    heartbeat_interval_ms: int = Field(3000, gt=0)
    max_poll_interval_ms: int = Field(300000, gt=0)
    request_timeout_ms: int = Field(30000, gt=0)
    retry_backoff_ms: int = Field(200, gt=0)
    idempotence: Literal["auto", "on", "off"] = "auto"  # auto: fall back to acks=all only if the broker lacks it

    @model_validator(mode="after")
    def _check(self) -> "KafkaConfig":
        if self.intake_low >= self.intake_high:
            raise ValueError(f"kafka intake_low ({self.intake_low}) must be below intake_high ({self.intake_high})")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("kafka heartbeat_interval_ms must be below session_timeout_ms")
        for t in (self.verdict_topic, self.dead_letter_topic, self.state_topic):
            if t and t in self.frames_topics:
                raise ValueError(f"kafka topic {t!r} is both a frames topic and an output topic")
        return self

    @property
    def bootstrap(self) -> str:
        return ",".join(self.bootstrap_servers)

    def common_kwargs(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": self.bootstrap,
            "request_timeout_ms": self.request_timeout_ms,
            "retry_backoff_ms": self.retry_backoff_ms,
            **self.security.client_kwargs(),
        }

    def effective_transactional_id(self) -> str:
        return self.transactional_id or f"{self.client_id}-{self.group_instance_id or self.group_id}"
