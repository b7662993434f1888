"""Prefect deployments and schedules generated from the settings stored in the database."""
