"""Review page for moderators, recent-verdicts store and control API (docs/review.md).

* :mod:`daemon.review.store` — bounded in-memory store of recent verdict events, per-track score
  timelines and acknowledgements, optionally persisted to SQLite; ``fakewatch verdicts --db``.
* :mod:`daemon.review.web` — the aiohttp routes mounted on the daemon's HTTP server.
* :mod:`daemon.review.render` / :mod:`daemon.review.assets` — server-rendered HTML, inline SVG
  charts, a small vanilla script and stylesheet (no build chain).
"""

from daemon.review.store import ReviewStoreConfig, VerdictStore

__all__ = ["ReviewStoreConfig", "VerdictStore"]
