"""Shared fixtures live in tests/fixtures/, one module per real process the tests start
(the service under uvicorn, Redis, Prometheus, headless chromium). They are loaded as pytest plugins."""

import pytest

# plain asserts in the shared helpers get pytest's detailed failure messages too
pytest.register_assert_rewrite("service_helpers")

pytest_plugins = [
    "fixtures.ports",
    "fixtures.service_proc",
    "fixtures.redis_proc",
    "fixtures.redis_cluster",
    "fixtures.prometheus_proc",
    "fixtures.chromium_proc",
]



@pytest.fixture(autouse=True)
def _vectorised_engine_path(monkeypatch):
    """Make Engine.update_batch take its vectorised pass for every batch size.

    The engine sends batches of <= Engine.SMALL_BATCH records through update() for speed; many
    tests check update_batch() against update() on short runs, which would then compare update()
    with itself. tests/test_engine.py checks the small-batch dispatch on its own."""
    from losswatch.detectors.engine import Engine

    monkeypatch.setattr(Engine, "SMALL_BATCH", 0)

