"""`dvc plots show` and `dvc plots diff` write pages that open offline: .dvc/config names the page in .dvc/html/,
which carries vega, vega-lite and vega-embed inline (DVC's own page loads them from a CDN). Run in a tiny DVC
repository in tmp_path with this repository's config and page; Chromium (where installed) draws the plot."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from fairquant.errors import FairquantError
from fairquant.vega_page import PACKAGES, inline_script, offline_page
from test_html_report import CHROMIUM, FLAGS, needs_chromium, parsed

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / ".dvc" / "html" / "offline.html"


def _dvc(*args: str, cwd: Path) -> str:
    return subprocess.run(["dvc", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def test_the_config_names_the_vendored_page_and_it_carries_the_three_packages_with_their_licences():
    assert _dvc("config", "plots.html_template", cwd=ROOT).strip() == "html/offline.html"
    page = TEMPLATE.read_text(encoding="utf-8")
    assert "{plot_divs}" in page and "{scripts}" not in page  # DVC fills {scripts} with its CDN tags
    for name, _ in PACKAGES:
        assert re.search(rf"<script>/\* {name} \d+\.\d+\.\d+, BSD-3-Clause", page)
        assert "Redistribution and use in source and binary forms" in (TEMPLATE.parent / f"LICENSE-{name}").read_text()
    assert "sourceMappingURL" not in page


def test_a_build_that_would_end_its_script_early_is_refused():
    with pytest.raises(FairquantError, match="x 1.0's build holds '</script'"):
        inline_script("x", "1.0", "a = '</SCRIPT>'")
    page = offline_page({name: ("1.0", f"var {name.replace('-', '_')} = 1;") for name, _ in PACKAGES})
    assert page.index("vega 1.0") < page.index("vega-lite 1.0") < page.index("vega-embed 1.0")


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git + DVC repository with one plot, committed, then changed in the workspace; this repository's page."""
    repo = tmp_path_factory.mktemp("plots")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    _dvc("init", "-q", cwd=repo)
    shutil.copytree(TEMPLATE.parent, repo / ".dvc" / "html")
    _dvc("config", "plots.html_template", _dvc("config", "plots.html_template", cwd=ROOT).strip(), cwd=repo)
    (repo / "dvc.yaml").write_text("plots:\n  - acc.csv: {x: step, y: accuracy}\n")
    (repo / "acc.csv").write_text("step,accuracy\n0,0.5\n1,0.7\n2,0.8\n")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "plot"], cwd=repo, check=True)
    (repo / "acc.csv").write_text("step,accuracy\n0,0.5\n1,0.6\n2,0.9\n")
    return repo


@pytest.mark.parametrize("command", [("show",), ("diff", "HEAD")], ids=["show", "diff"])
def test_dvc_plots_pages_load_no_script_from_the_network(repo, command):
    out = repo / f"out-{command[0]}"
    _dvc("plots", *command, "-o", str(out), cwd=repo)
    page = (out / "index.html").read_text(encoding="utf-8")
    resources = parsed(page)
    assert not [r for r in resources.loads if re.match(r"(https?:)?//", r[2])], resources.loads
    assert "cdn.jsdelivr" not in page and resources.tags.count("script") >= 4  # three packages and the plot's
    assert "vegaEmbed" in page and "accuracy" in page


@needs_chromium
def test_chromium_draws_the_plot_from_the_inlined_scripts(repo, tmp_path):
    out = repo / "out-chromium"
    _dvc("plots", "show", "-o", str(out), cwd=repo)
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
                          "--dump-dom", (out / "index.html").as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert re.search(r'<canvas[^>]*class="marks"|<svg[^>]*class="marks"', dom), "vega drew nothing"
