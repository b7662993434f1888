"""Running patchflow itself: accounts, audit, backups, setup, TLS and the Prefect processes.

These are the operator's concerns rather than a patch domain: who may log in and what they did,
`init`, backup and restore, the HTTPS certificate, settings kept in the database, Prefect's
environment and child servers, and the named crash points the fault tests use.
"""
