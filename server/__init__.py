"""The HTTPS entry point: FastAPI app (agent API, admin API, health), built by `create_app()`."""
