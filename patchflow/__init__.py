"""patchflow's services, which the CLI, the API, the console and the Prefect tasks all call, so a
rule holds whichever door a request came through.

The modules at this level are the base every domain shares (config, errors, crypto, http,
untrusted, permissions); each domain is a subpackage: catalog (patch servers, sync, content,
replication, vulnerability feeds), upstreams, fleet, scanning, install (approvals included),
cycle, reporting and ops (accounts, audit, backup, setup, TLS, Prefect processes). Nothing is
re-exported here, so importing one domain does not import the others.
"""

__version__ = "0.1.0"
