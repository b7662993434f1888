"""A patch server's filters (categories, languages, products), applied before storing.

Pure functions. `None` for a filter means All. The catalog keeps each patch whole (several patch
servers with different filters share it); a server's filters decide which patches it offers, and
the scan and install steps narrow products and installers with the same functions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sources.records import InstallerRecord, PatchRecord


@dataclass(frozen=True)
class Filters:
    categories: frozenset[str] | None = None
    languages: frozenset[str] | None = None  # casefolded
    products: frozenset[str] | None = None  # casefolded

    @classmethod
    def from_lists(
        cls,
        categories: list[str] | None = None,
        languages: list[str] | None = None,
        products: list[str] | None = None,
    ) -> Filters:
        def norm(values: list[str] | None, fold: bool) -> frozenset[str] | None:
            if not values:
                return None
            return frozenset(v.casefold() if fold else v for v in values)

        return cls(norm(categories, False), norm(languages, True), norm(products, True))


def product_names(record: PatchRecord) -> list[str]:
    """Products a record belongs to; a third-party package is its own product ("7-Zip")."""
    if record.products:
        return [p.name for p in record.products]
    return [package_name(record.title, record.version)]


def package_name(title: str, version: str | None) -> str:
    """"7-Zip 23.01" -> "7-Zip": third-party titles are the package name plus the version."""
    if version and title.endswith(" " + version):
        return title[: -len(version) - 1]
    return title


def product_allowed(name: str, filters: Filters, package_id: str | None = None) -> bool:
    if filters.products is None:
        return True
    return name.casefold() in filters.products or (
        package_id is not None and package_id.casefold() in filters.products
    )


def passes(record: PatchRecord, filters: Filters) -> bool:
    """Whether a patch server with these filters offers this patch."""
    if filters.categories is not None and record.category not in filters.categories:
        return False
    if filters.products is not None and not any(
        product_allowed(name, filters, record.package_id) for name in product_names(record)
    ):
        return False
    if filters.languages is not None and record.languages and not record.installers:
        # Language-specific metadata without installers (WSUS): the language decides.
        return any(language_matches(lang, filters.languages) for lang in record.languages)
    return True


def language_matches(tag: str, wanted: frozenset[str]) -> bool:
    """Whether a language tag is among the wanted ones (casefolded). WSUS names languages by
    their primary subtag ("en", "de"), so "en" matches a wanted "en-US" and the reverse; two
    different regions ("en-GB", "en-US") still differ."""
    folded = tag.casefold()
    if folded in wanted:
        return True
    primary = folded.split("-")[0]
    return any(w == primary or w.split("-")[0] == folded for w in wanted)


def pick_installers(
    installers: Iterable[InstallerRecord], languages: frozenset[str] | None
) -> list[InstallerRecord]:
    """Installers in the wanted languages plus language-neutral ones.

    When nothing matches, every installer is kept: winget tags the only build of many packages
    en-US, and such a tag names that build rather than offering a language choice (the winget
    client treats a preferred locale the same way).
    """
    items = list(installers)
    if languages is None:
        return items
    kept = [i for i in items if i.locale is None or language_matches(i.locale, languages)]
    return kept or items
