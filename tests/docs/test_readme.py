"""The README stays short and points into the docs: the two commands, links that resolve."""

import re

from tests.support.doc_fences import README, ROOT


def test_readme_is_short_and_starts_with_the_two_commands():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    head = "\n".join(text.splitlines()[:15])
    assert "make serve" in head and "make test" in head


def test_readme_links_resolve():
    text = README.read_text(encoding="utf-8")
    targets = [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t]
    assert len(targets) >= 15
    missing = [t for t in targets if not (ROOT / t.partition("#")[0]).exists()]
    assert not missing
