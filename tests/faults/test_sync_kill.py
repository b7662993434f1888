"""SIGKILL while a sync stores a document (written, not committed), then the rerun: the killed
document leaves nothing behind, the documents before it stay, and the rerun ends with exactly
the catalog a clean sync builds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from patchflow.sample_catalog import MSRC_DIR, PACKAGES, WINGET_DIR
from tests.faults.harness import Commands, counts, query, scalar

pytestmark = pytest.mark.slow
CATALOG = ["patches", "patch_products", "patch_cves", "patch_installers", "supersedence",
           "server_patches", "sync_documents", "products"]


def _add_server(cli) -> None:  # type: ignore[no-untyped-def]
    assert cli("init").code == 0
    result = cli("server", "add", "local", "--host", "h", "--msrc-source", str(MSRC_DIR),
                 "--winget-source", str(WINGET_DIR), "--winget-packages", ",".join(PACKAGES))
    assert result.code == 0, result.err


def _catalog(db_url: str) -> dict[str, object]:
    return {**counts(db_url, CATALOG),
            "ukeys": sorted(r[0] for r in query(db_url, "SELECT ukey FROM patches")),
            "documents": sorted(query(db_url, "SELECT source, doc_key, status, patches "
                                              "FROM sync_documents"))}


@pytest.fixture(scope="session")
def clean_catalog(tmp_path_factory: pytest.TempPathFactory, prefect: None
                  ) -> Iterator[dict[str, object]]:
    """What one uninterrupted sync of the sample catalog stores (the same on any database)."""
    from cli.main import main
    from models.db import dispose_all
    from tests.conftest import _prepare

    home = tmp_path_factory.mktemp("clean-sync")
    url = f"sqlite:///{home / 'patchflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATCHFLOW_HOME", str(home))
        mp.setenv("PATCHFLOW_DATABASE_URL", url)
        _prepare(url)
        assert main(["init"]) == 0
        assert main(["server", "add", "local", "--host", "h", "--msrc-source", str(MSRC_DIR),
                     "--winget-source", str(WINGET_DIR), "--winget-packages",
                     ",".join(PACKAGES)]) == 0
        assert main(["sync", "local"]) == 0
        dispose_all()
        yield _catalog(url)


def test_sync_killed_before_a_document_commits(cli, commands: Commands, db_url: str,
                                               clean_catalog: dict[str, object]) -> None:
    _add_server(cli)
    commands.killed("sync", "local", fault="sync.before_commit@3")

    # Two documents committed whole; the third (written, not committed) left nothing.
    documents = query(db_url, "SELECT doc_key, status, patches FROM sync_documents")
    assert len(documents) == 2 and {d[1] for d in documents} == {"ok"}, documents
    stored = {d[0] for d in documents}
    clean = {d[1]: d[3] for d in clean_catalog["documents"]}  # type: ignore[attr-defined]
    assert sum(clean[k] for k in stored) == scalar(db_url, "SELECT COUNT(*) FROM server_patches")
    assert scalar(db_url, "SELECT COUNT(*) FROM patches") == \
        scalar(db_url, "SELECT COUNT(*) FROM server_patches")
    assert scalar(db_url, "SELECT sync_status FROM patch_servers") == "Running"

    # The status says Running: a plain rerun refuses and says how to go on after a crash.
    again = cli("sync", "local")
    assert again.code == 2 and "--force after a crash" in again.err
    assert "Traceback" not in again.err
    assert cli("sync", "local", "--force").code == 0
    assert _catalog(db_url) == clean_catalog
    assert scalar(db_url, "SELECT sync_status FROM patch_servers") == "Successful"
    message = scalar(db_url, "SELECT sync_message FROM patch_servers")
    assert "2 unchanged" in message, message  # the committed documents were not redone
