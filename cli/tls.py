"""`patchflow tls`: the HTTPS server's certificate, as agents pin it at enrolment."""

from __future__ import annotations

import sys

import typer

from cli.common import print_json

tls_app = typer.Typer(help="The HTTPS server's certificate.")


def register(app: typer.Typer) -> None:
    app.add_typer(tls_app, name="tls")


@tls_app.command("fingerprint")
def tls_fingerprint(
    as_json: bool = typer.Option(False, "--json", help="JSON output"),
) -> None:
    """Print the server certificate's SHA-256 fingerprint (give it to `patchflow-agent enroll`)."""
    from patchflow.ops import tls

    cert, _key = tls.cert_paths()
    if as_json:
        print_json({"fingerprint": tls.fingerprint(cert), "certificate": str(cert)})
        return
    sys.stdout.write(tls.fingerprint(cert) + "\n")
