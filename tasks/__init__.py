"""Prefect tasks: one module per workflow step. Each opens its own database session."""
