"""patchflow's services: configuration, secrets, the content store and the domain services
(sync, scan, approvals, install, reporting, ...) that the CLI, the API, the console and the
Prefect tasks all call, so a rule holds whichever door a request came through."""

__version__ = "0.1.0"
