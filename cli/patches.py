"""`patchflow patches list|show`: what the catalog holds."""

from __future__ import annotations

import typer

from cli.common import (
    console,
    db_session,
    plain,
    print_csv,
    print_json,
    print_table,
    split_csv,
)
from patchflow.catalog.catalog_query import PatchFilters, find_patch, list_patches, patch_detail
from patchflow.errors import UserError

patches_app = typer.Typer(help="The patch catalog.")
COLUMNS = ["id", "source", "kb", "package_id", "version", "title", "severity", "category",
           "restart_required", "eula_required", "release_date", "cves", "superseded_by"]


def register(app: typer.Typer) -> None:
    app.add_typer(patches_app, name="patches")


@patches_app.command("list")
def list_(
    server: str = typer.Option(None, "--server", help="Only patches this patch server offers"),
    source: str = typer.Option(None, "--source", help="msrc | winget | wsus | server"),
    severity: str = typer.Option(None, "--severity", help="Comma-separated severities"),
    category: str = typer.Option(None, "--category", help="Comma-separated categories"),
    product: str = typer.Option(None, "--product", help="Comma-separated product names"),
    as_json: bool = typer.Option(False, "--json"),
    as_csv: bool = typer.Option(False, "--csv"),
) -> None:
    """List patches in the catalog."""
    if as_json and as_csv:
        raise UserError("choose one of --json and --csv")
    filters = PatchFilters(server, source, split_csv(severity), split_csv(category),
                           split_csv(product))
    with db_session() as session:
        rows = list_patches(session, filters)
    if as_json:
        print_json(rows)
    elif as_csv:
        print_csv(rows, COLUMNS)
    else:
        print_table(
            f"{len(rows)} patches",
            ["ID", "KB / package", "Version", "Title", "Severity", "Restart", "Released"],
            [[r["id"], r["kb"] or r["package_id"], r["version"] or "", r["title"], r["severity"],
              r["restart_required"], r["release_date"] or ""] for r in rows],
        )


@patches_app.command("show")
def show(
    ref: str = typer.Argument(..., help="id, KB number or PACKAGE@VERSION"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show one patch with its products, CVEs and installers."""
    from patchflow.catalog.vuln_query import patch_vulnerabilities

    with db_session() as session:
        patch = find_patch(session, ref)
        data = patch_detail(session, patch)
        data.update(patch_vulnerabilities(session, patch))
    if as_json:
        print_json(data)
        return
    console.print(f"[bold]{plain(data['title'])}[/bold]  (#{data['id']}, {plain(data['source'])})")
    for key in ("kb", "package_id", "version", "vendor", "category", "severity",
                "restart_required", "eula_required", "release_date", "superseded_by", "info_url"):
        if data[key] not in (None, ""):
            console.print(f"  {key}: {plain(data[key])}")
    if data["cves"]:
        console.print(f"  CVEs ({len(data['cves'])}): {plain(', '.join(data['cves'][:20]))}"
                      + (" …" if len(data["cves"]) > 20 else ""))
    if data["vulnerabilities"]:
        exploited = [v["cve"] for v in data["vulnerabilities"] if v["exploited"]]
        console.print(f"  CVSS max: {plain(data['cvss_max'])}; exploited: "
                      f"{plain(', '.join(exploited) or 'no')}")
    if data["products"]:
        print_table("Products", ["Product", "Fixed build", "Supersedes", "Severity"],
                    [[p["name"], p["fixed_build"], p["supersedes"], p["severity"]]
                     for p in data["products"]])
    if data["installers"]:
        print_table("Installers", ["Arch", "Type", "Scope", "Locale", "SHA-256"],
                    [[i["arch"], i["type"], i["scope"], i["locale"], i["sha256"][:16] + "…"]
                     for i in data["installers"]])
