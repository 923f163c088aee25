"""The losswatch service: FastAPI app, stores, metrics, command line."""
