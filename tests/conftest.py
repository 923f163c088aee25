"""Shared fixtures live in tests/fixtures/, one module per real process the tests start
(the service under uvicorn, Redis, Prometheus). They are loaded as pytest plugins."""

pytest_plugins = [
    "fixtures.ports",
    "fixtures.service_proc",
    "fixtures.redis_proc",
    "fixtures.prometheus_proc",
]
