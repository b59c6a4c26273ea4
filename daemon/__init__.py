"""fakewatch daemon: the asyncio service (sources, pipeline stages, tracking, temporal state, sinks, metrics, CLI)."""

__version__ = "0.1.0"
