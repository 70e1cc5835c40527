"""README's troubleshooting table and the catalogue tests are one list: every row's id is a parametrised case of
a ``tests/test_catalogue_<part>.py`` module (its ``CASES``), and every case has its row. A README section may
gather the cases of several modules (split by what they damage, so that xdist runs them side by side)."""

import re
from pathlib import Path

import pytest

from tests import (test_catalogue_artifacts, test_catalogue_cli, test_catalogue_datasets, test_catalogue_models,
                   test_catalogue_params)

ROOT = Path(__file__).resolve().parents[1]
PARTS = {"Params": [test_catalogue_params], "Datasets": [test_catalogue_datasets],
         "Artifacts and the command line": [test_catalogue_artifacts, test_catalogue_models, test_catalogue_cli]}
MINIMUM_KINDS = 60


def readme_rows() -> dict[str, list[str]]:
    """Each troubleshooting subsection's row ids, in order."""
    text = (ROOT / "README.md").read_text()
    body = text.split("\n## Troubleshooting\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for part in re.split(r"\n### ", body)[1:]:
        title, _, table = part.partition("\n")
        rows[title.strip()] = re.findall(r"^\| `([a-z0-9-]+)` \|", table, flags=re.MULTILINE)
    return rows


@pytest.mark.parametrize("title", sorted(PARTS))
def test_every_row_has_its_case_and_every_case_its_row(title):
    ids = [case.id for module in PARTS[title] for case in module.CASES]
    rows = readme_rows()[title]
    assert len(ids) == len(set(ids)), f"duplicate case ids in {[module.__name__ for module in PARTS[title]]}"
    assert len(rows) == len(set(rows)), f"duplicate rows under ### {title}"
    assert sorted(rows) == sorted(ids), (f"README rows without a case: {sorted(set(rows) - set(ids))}; cases "
                                         f"without a row: {sorted(set(ids) - set(rows))}")


def test_the_catalogue_covers_at_least_sixty_kinds():
    rows = readme_rows()
    assert set(rows) == set(PARTS)
    assert sum(len(ids) for ids in rows.values()) >= MINIMUM_KINDS
