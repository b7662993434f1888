"""The HTTPS entry point, built by `app.create_app()`: the agent API (enrolment, inventories,
jobs), the admin API (fleet, patch servers, install), the replication API another instance
pages through, content downloads, health, and the web console (server/console/) on the same app
and port. Routes only translate HTTP to the patchflow services the CLI calls too: auth.py says
who is calling, deps.py gives a route its database session (`SessionDep`), errors.py turns every
failure into `{"error": ...}`, and run.py serves the app over TLS."""
