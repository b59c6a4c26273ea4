"""Frame sources: PyAV files and network streams (:mod:`daemon.sources.av`) and Kafka (``kafka*.py``).

Every source implements :class:`daemon.sources.base.Source`.
"""

from daemon.sources.base import Source, SourceError, redact_url

__all__ = ["Source", "SourceError", "redact_url"]
