"""Every documentation page the code and the docs cite exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC_PATH = re.compile(r"docs/[\w./-]+\.md")
RELATIVE_LINK = re.compile(r"\]\(([\w./-]+\.md)(?:#[\w-]*)?\)")


def _sources() -> list[Path]:
    files = [ROOT / "README.md"]
    for folder, pattern in (("src", "*.py"), ("data_prep", "*.py"), ("docs", "*.md")):
        files += sorted((ROOT / folder).rglob(pattern))
    return files


def test_every_cited_doc_page_exists():
    missing = []
    for path in _sources():
        text = path.read_text(encoding="utf-8")
        for cited in DOC_PATH.findall(text):
            if not (ROOT / cited).is_file():
                missing.append(f"{path.relative_to(ROOT)}: {cited}")
        if path.suffix == ".md":  # links relative to the page
            for link in RELATIVE_LINK.findall(text):
                if not link.startswith("docs/") and not (path.parent / link).is_file():
                    missing.append(f"{path.relative_to(ROOT)}: {link}")
    assert not missing, "cited documentation that does not exist:\n" + "\n".join(missing)


def test_the_docs_hold_the_schema_and_the_labeller_rules_the_code_cites():
    data = (ROOT / "docs" / "data.md").read_text(encoding="utf-8")
    assert "## The schema" in data and "## The trajectory labeller" in data
    assert "| `senna`" in data and "| `heading`" in data
    cited = [p for p in _sources() if "SPEC §" in p.read_text(encoding="utf-8")]
    assert not cited, f"cite docs/ instead of a spec that is not in the repository: {cited}"
