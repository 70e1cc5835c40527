"""plots/report.html: the HTML renderer of the report's document, the flipped test images it adds, and the page opened
in headless Chromium (Debian's `chromium`; .ci/run installs it, skipped with the reason where it is absent).

The report here is built from the small fixtures of tests/test_report.py (a classification study) and
tests/test_sweep.py (a sweep's curve, heatmap and Pareto front), never from a repro."""

import base64
import html
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fairquant.errors import FairquantError
from fairquant.io import predictions_schema, write_table
from fairquant.params import DataParams, Params, PrepareParams, ReportParams, parse_params
from fairquant.report.build import build_document, write_report
from fairquant.report.document import Cell, Document, Figure, Gallery, Picture, Section, prose, strong, table
from fairquant.report.exemplars import choose, exemplars_section, flipped
from fairquant.report.html import CSP, HtmlRenderer, render_html
from fairquant.results import PredictionsInfo
from test_report import _results
from test_sweep import _evaluated

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium; "
                                                             ".ci/run installs it): the page cannot be opened here")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


class Resources(HTMLParser):
    """Every attribute of the page that names something to load, and every tag."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.loads: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.metas: list[dict] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "meta":
            self.metas.append(attrs)
        for name in ("src", "href", "srcset", "poster", "data", "action", "background"):
            if name in attrs:
                self.loads.append((tag, name, attrs[name]))


def parsed(page: str) -> Resources:
    parser = Resources()
    parser.feed(page)
    return parser


# --- the renderer -------------------------------------------------------------------------------------------------

def test_every_text_is_escaped_and_tables_scroll_and_sections_fold():
    hostile = "<script>alert('x')</script> & \"q\""
    document = Document(hostile, (prose(hostile, strong(hostile)),), (
        Section(hostile, (table([hostile, "n"], [[Cell(hostile, emphasis=True), Cell(3, "int")]]),),
                (Section("inner", (prose("x"),)),)),))
    page = render_html(document)
    assert "<script" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;q&quot;" in page
    assert '<div class="scroll"><table>' in page and '<td class="num">3</td>' in page
    assert page.count("<details open><summary><h2>") == 1 and "<details open><summary><h3>inner</h3>" in page
    metas = parsed(page).metas
    assert {"http-equiv": "Content-Security-Policy", "content": CSP} in metas
    assert {"name": "viewport", "content": "width=device-width, initial-scale=1"} in metas


def test_figures_and_pictures_are_inlined_pngs_that_decode(rng):
    frame = _results(0.95)
    document = build_document({0: frame})
    picture = Picture(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), "id-1: true 1")
    page = render_html(Document("t", (), (document.section("Figures"), Section("g", (Gallery("g", (picture,)),)))))
    sources = [value for _, name, value in parsed(page).loads if name == "src"]
    assert len(sources) == 4  # per_group, gaps, pareto and the picture
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1])))
        assert image.format == "PNG" and min(image.size) > 0
    assert Image.open(io.BytesIO(base64.b64decode(sources[-1].split(",", 1)[1]))).size == (8, 8)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(base64.b64decode(sources[-1].split(",", 1)[1])))),
                          picture.image)


def test_a_large_picture_is_downscaled_to_bound_the_page_and_a_small_one_kept_exactly(rng):
    from fairquant.report.html import PICTURE_SIDE, picture_png

    large = rng.integers(0, 255, (1000, 600, 3), dtype=np.uint8)  # a real photograph's size (H 1000, W 600)
    shrunk = Image.open(io.BytesIO(picture_png(large)))
    assert shrunk.size == (144, PICTURE_SIDE)  # (W, H): the longer side at the bound, the aspect ratio kept
    assert len(picture_png(large)) < 0.1 * large.nbytes
    exact = rng.integers(0, 255, (PICTURE_SIDE, 64, 3), dtype=np.uint8)  # at the bound: stored as it is
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(picture_png(exact)))), exact)


def test_an_unknown_element_and_a_bad_picture_are_errors():
    with pytest.raises(FairquantError, match="the HTML renderer has no rule for str"):
        HtmlRenderer().block("text")
    with pytest.raises(FairquantError, match=r"an \(H, W, 3\) uint8 image, found float64 \(4, 4\)"):
        render_html(Document("t", (), (Section("g", (Gallery("g", (Picture(np.zeros((4, 4)), "c"),)),)),)))


# --- the flipped test images --------------------------------------------------------------------------------------

def _flip_frames(n=60, flips=((3, 7, 11, 15, 19, 23, 27), (4, 8)), target_of=lambda i: i % 2):
    """fp32 and ptq predictions of n test samples, group '1' the odd ids and '0' the even ones; ptq flips the ids in
    ``flips`` (group '1''s, then group '0''s). The store's rows are in reverse order; image k is all k."""
    ids = np.arange(n)
    group = np.where(ids % 2 == 1, "1", "0")
    y = np.array([target_of(i) for i in ids])
    fp32 = pd.DataFrame({"sample_id": [f"{i:05d}.jpg" for i in ids], "y_true": y, "y_pred": y, "Male": group,
                         "y_score": y.astype("float32")})
    changed = list(flips[0]) + list(flips[1])
    ptq = fp32.copy()
    ptq.loc[changed, "y_pred"] = 1 - ptq.loc[changed, "y_pred"]
    ptq["y_score"] = ptq["y_pred"].astype("float32")
    samples = pd.DataFrame({"sample_id": fp32["sample_id"], "split": "test", "y_true": y, "row": ids[::-1],
                            "Male": group})
    images = np.stack([np.full((6, 6, 3), i, dtype=np.uint8) for i in range(n)])
    return {"fp32": fp32, "ptq": ptq}, samples, images


INFO = {"protected": ["Male"], "synthetic": True, "target": "Smiling", "image_size": 6}


def test_each_groups_flips_are_counted_and_a_bounded_deterministic_few_shown():
    predictions, samples, images = _flip_frames()
    section = exemplars_section(predictions, samples, images, INFO, per_group=4, seed=0)
    (ptq,) = section.subsections
    counts = ptq.blocks[0]
    assert [[c.words() for c in row] for row in counts.rows] == [["0", "2", "30", "6.67"], ["1", "7", "30", "23.33"]]
    zero, one = ptq.blocks[1:]
    assert (zero.title, one.title) == ("0: 2 of 2 flipped", "1: 4 of 7 flipped")
    shown = [p.caption.split(":")[0] for p in one.pictures]
    assert set(shown) <= {f"{i:05d}.jpg" for i in (3, 7, 11, 15, 19, 23, 27)} and len(set(shown)) == 4
    again = exemplars_section(predictions, samples, images, INFO, per_group=4, seed=0).subsections[0].blocks[2]
    assert [p.caption for p in again.pictures] == [p.caption for p in one.pictures]  # the same on every run
    picture = one.pictures[0]
    index = int(picture.caption[:5])
    assert (picture.image == 59 - index).all()  # the store's row of that sample (rows are reversed), not its index
    assert picture.caption.endswith("true Smiling; fp32 says Smiling, ptq says not Smiling")
    assert one.synthetic and "SYNTHETIC images" in "".join(s.text for s in section.blocks[0].spans)


def test_choose_is_seeded_by_sample_id_not_file_order():
    rows = pd.DataFrame({"sample_id": [f"{i:03d}" for i in range(20)], "v": range(20)})
    first = choose(rows, 5, seed=3)
    assert list(choose(rows.iloc[::-1], 5, seed=3)["sample_id"]) == list(first["sample_id"])
    assert len(first) == 5 and len(choose(rows, 50, seed=3)) == 20 and choose(rows, 0, seed=3).empty


def test_predictions_of_other_samples_are_refused():
    predictions, samples, images = _flip_frames()
    with pytest.raises(FairquantError, match=r"the test predictions of ptq and fp32 hold different samples \(59 and "
                                             r"60 rows\); they come from different runs"):
        flipped(predictions["fp32"], predictions["ptq"].iloc[1:], name="ptq")
    with pytest.raises(FairquantError, match=r"fp32's test predictions hold sample '00000.jpg', which is not in the "
                                             r"prepared test split"):
        exemplars_section(predictions, samples.iloc[1:], images, INFO, per_group=4, seed=0)


@pytest.mark.parametrize("value, words", [(-1, "expected greater than or equal to 0; found -1"),
                                          (33, "expected less than or equal to 32; found 33"),
                                          ("four", "expected a valid integer; found 'four'")])
def test_a_bad_exemplar_count_is_refused_on_load(value, words):
    with pytest.raises(FairquantError, match=f"'report.exemplars_per_group': {words}"):
        parse_params({"report": {"exemplars_per_group": value}})
    assert ReportParams().exemplars_per_group == 4


def test_the_stage_reads_the_prepared_store_and_the_first_seeds_test_predictions(tmp_path):
    from stages.report import _exemplars
    from tests.conftest import write_prepared

    prepared = write_prepared(tmp_path / "prepared", n=90, size=8)
    samples = pd.read_parquet(prepared / "samples.parquet")
    test = samples[samples["split"] == "test"].reset_index(drop=True)
    params = Params(seeds=[3, 1], data=DataParams(target="Smiling", protected=["Male"]),
                    prepare=PrepareParams(image_size=8))
    for slot, flips in (("fp32", []), ("ptq", [0, 1, 2]), ("qat", [])):
        y_pred = test["y_true"].to_numpy().astype("int64")
        y_pred[flips] = 1 - y_pred[flips]
        frame = pd.DataFrame({"sample_id": test["sample_id"], "y_true": test["y_true"].astype("int64"),
                              "y_score": y_pred.astype("float32"), "y_pred": y_pred, "Male": test["Male"]})
        folder = tmp_path / "predictions" / "s1" / "variants" / slot
        write_table(folder / "test.parquet", frame, predictions_schema(["Male"]))
        PredictionsInfo(name=slot, kind=slot, kernels="simulated", details={}, size_bytes=1,
                        synthetic=True).write(folder)
    section = _exemplars(prepared, tmp_path / "predictions", params, Path("params.yaml"), ["fp32", "ptq", "qat"])
    assert [s.title for s in section.subsections] == ["ptq", "qat"]  # seed 1, the first: s3 is never read
    ptq = section.subsections[0]
    assert sum(c[1].value for c in ptq.blocks[0].rows) == 3 and sum(len(g.pictures) for g in ptq.blocks[1:]) == 3
    assert section.subsections[1].blocks[1:] == ()  # qat flipped nothing: no pictures
    off = params.model_copy(update={"report": ReportParams(exemplars_per_group=0)})
    assert _exemplars(prepared, tmp_path / "predictions", off, Path("params.yaml"), ["fp32", "ptq"]) is None
    with pytest.raises(FairquantError, match="was made with image_size 8 but params.yaml has prepare.image_size 16"):
        _exemplars(prepared, tmp_path / "predictions", params.model_copy(update={"prepare": PrepareParams(
            image_size=16)}), Path("params.yaml"), ["fp32", "ptq"])


# --- the page as written, and opened in Chromium ------------------------------------------------------------------

@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, Document, Section]:
    """plots/report.html of a small study: one seed's classification results, its sweep, and flipped images."""
    folder = tmp_path_factory.mktemp("report")
    per_seed, sweep = {0: _results(0.95)}, {0: _evaluated(0)}
    predictions, samples, images = _flip_frames()
    exemplars = exemplars_section(predictions, samples, images, INFO, per_group=4, seed=0)
    write_report(per_seed, summary_path=folder / "summary.json", plots_dir=folder / "plots", sweep=sweep,
                 exemplars=exemplars)
    document = build_document(per_seed, sweep=sweep)
    return folder / "plots" / "report.html", Document(document.title, document.intro,
                                                       document.sections + (exemplars,)), exemplars


def test_the_page_loads_nothing_but_itself(report):
    path, document, exemplars = report
    page = path.read_text(encoding="utf-8")
    resources = parsed(page)
    assert not {"script", "link", "iframe", "object", "embed", "base"} & set(resources.tags)
    assert all(value.startswith("data:image/png;base64,") for _, name, value in resources.loads), \
        [r for r in resources.loads if not r[2].startswith("data:")]
    assert not re.search(r"url\(|@import", page)  # no stylesheet fetch either
    figures = sum(isinstance(b, Figure) for s in document.walk() for b in s.blocks)
    pictures = sum(len(b.pictures) for s in document.walk() for b in s.blocks if isinstance(b, Gallery))
    assert figures == 6 and pictures == 4 + 2  # per_group, gaps, pareto, the sweep's curve, heatmap and Pareto front
    assert len(resources.loads) == figures + pictures
    markdown = (path.parent / "report.md").read_text(encoding="utf-8")  # the same document: every heading in both
    html_only = {id(s) for s in Document("", (), (exemplars,)).walk()}  # the flipped images
    for section in document.walk():
        assert f">{html.escape(section.title)}</h" in page
        assert id(section) in html_only or f"# {section.title}\n" in markdown


def _chromium(path: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, path.as_uri()],
                          capture_output=True, text=True, timeout=120, check=True)


@needs_chromium
def test_chromium_opens_the_page_offline_decodes_every_figure_and_shows_the_tables(report, tmp_path):
    path, document, _ = report
    # 1. As written: the page's own policy refuses any load but data: images; a refusal would be logged.
    opened = _chromium(path, tmp_path, "--enable-logging=stderr", "--v=0", "--virtual-time-budget=3000", "--dump-dom")
    assert "Content Security Policy" not in opened.stderr, [line for line in opened.stderr.splitlines()
                                                           if "Content Security Policy" in line]
    dom = opened.stdout
    for heading in ("Headline", "Flipped test images", "Heatmap: methods x depth"):
        assert f">{heading}</h" in dom
    for tab in document.tables():
        assert all(f">{html.escape(column, quote=False)}</th>" in dom for column in tab.columns)
    # 2. A copy with a checker script (the page itself allows none) reports each image's decoded size.
    checker = ("<script>addEventListener('load', () => { document.body.dataset.sizes = JSON.stringify("
               "[...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight])); });</script>")
    page = path.read_text(encoding="utf-8")
    copy = tmp_path / "checked.html"
    copy.write_text(page.replace(CSP.replace("'", "&#x27;"), CSP.replace("'", "&#x27;") +
                                 "; script-src &#x27;unsafe-inline&#x27;").replace("</body>", checker + "</body>"),
                    encoding="utf-8")
    checked = _chromium(copy, tmp_path, "--virtual-time-budget=3000", "--dump-dom").stdout
    sizes = re.search(r'data-sizes="([^"]*)"', checked)
    assert sizes is not None, "the checker did not run"
    decoded = json.loads(sizes.group(1).replace("&quot;", '"'))
    assert len(decoded) == len(parsed(page).loads) and all(ok and w > 0 and h > 0 for ok, w, h in decoded), decoded
    # 3. A screenshot at a phone's width: the artifact a person looks at (plots/ only when asked to).
    shot = tmp_path / "report-phone.png"
    _chromium(path, tmp_path, "--window-size=412,2400", f"--screenshot={shot}")
    assert Image.open(shot).size == (412, 2400)
    copy_to = os.environ.get("FAIRQUANT_REPORT_SCREENSHOT")
    if copy_to:
        shutil.copyfile(shot, copy_to)
