"""The README and the manual: generated tables match their regeneration, links resolve."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from experiments import generate_docs

REPO = Path(__file__).parents[1]
GENERATED = REPO / "docs" / "generated"


@pytest.mark.slow
def test_the_committed_generated_tables_are_their_regeneration():
    regenerated = generate_docs.tables()
    assert regenerated  # at least the pilot's claims table
    for name, text in regenerated.items():
        committed = GENERATED / name
        assert committed.is_file(), (
            f"docs/generated/{name} is missing: run experiments.generate_docs"
        )
        assert committed.read_text(encoding="utf-8") == text, f"docs/generated/{name} is stale"


@pytest.mark.parametrize(
    ("block", "name"),
    [
        ("claims_tiny_arith_long", "claims_tiny_arith_long_headline.md"),
        ("claim7_stall_search_long", "claim7_stall_search_long_verdict.md"),
        (
            "claims_tiny_arith_confirmatory_rereading",
            "claims_tiny_arith_confirmatory_rereading_headline.md",
        ),
        ("claim7_stall_search", "claim7_stall_search_verdict.md"),
    ],
)
def test_the_readme_blocks_are_the_generated_ones(block, name):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    text = (GENERATED / name).read_text(encoding="utf-8")
    assert generate_docs.readme_with(block, text, readme) == readme
    assert text.strip() in readme


def test_the_readme_fits_on_a_screen_and_its_links_resolve():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        if "://" not in link:
            assert (REPO / link).exists(), link


def test_every_docs_page_is_in_the_navigation():
    import yaml

    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]

    def pages(items):
        for item in items:
            for value in item.values():
                yield from pages(value) if isinstance(value, list) else [value]

    listed = set(pages(nav))
    on_disk = {p.name for p in (REPO / "docs").glob("*.md")}
    assert listed == on_disk
