"""The package's version, in one place: pyproject.toml reads it from here at build time
(``[tool.setuptools.dynamic]``), and the service (the OpenAPI spec), the command line
(``losswatch --version``) and the client (its User-Agent) import it. A constant rather than the
installed metadata: importing ``importlib.metadata`` would cost the client tens of milliseconds."""

__version__ = "0.1.0"
