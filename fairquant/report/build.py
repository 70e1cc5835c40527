"""The report built once from the metrics, and written: metrics/summary.json, one metrics file per variant
(metrics/variants/, metrics/verify/), the plot tables, figures, plots/report.md and the LaTeX tables in plots/tables/."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

from fairquant.errors import FairquantError
from fairquant.fairness.seeds import seed_table, summary_over_seeds
from fairquant.fairness.summary import headline_gaps, variant_rows, verification_rows, verification_summary
from fairquant.io import atomic_dir, write_csv, write_json
from fairquant.report.classification import (compression_sections, flips_section, headline_section, intro,
                                             per_group_sections, seeds_section, signed_sections, table1_section)
from fairquant.report.multiclass import multiclass_sections
from fairquant.report.document import Document, Figure, Section
from fairquant.report.html import render_html
from fairquant.report.latex import latex_tables
from fairquant.report.markdown import render_markdown
from fairquant.report import sweep_figures  # noqa: F401  (registers the sweep's drawings)
from fairquant.report.remedies import (calibration_sections, int8_sections, mixed_precision_sections,
                                       precision_sections, remedies_section)
from fairquant.report.sweep import plot_frames, sweep_metrics, sweep_section
from fairquant.report.tables import gaps_table, pareto_table, per_group_table, verification_tables
from fairquant.report.verification import curve_table, verification_section

TITLE = "fairquant report"
LATEX_DIR = "tables"  # plots/tables/<name>.tex


def classification_sections(results: dict[str, dict], calibration_sets: dict[str, dict] | None = None,
                            seeds: dict[str, dict] | None = None, seed: int | None = None) -> list[Section]:
    """``results`` are one training seed's metrics by slot (``seed``); ``seeds`` the across-seed table."""
    first = next(iter(results.values()))
    confidence = first["confidence"]
    sections = [seeds_section(seeds, confidence, seed)] if seeds is not None else []
    if first.get("task") == "multiclass":  # per-class recall, worst class, Balancing Act's drops lead
        sections += [*multiclass_sections(results, confidence), flips_section(results)]
    else:
        sections += [headline_section(results), *signed_sections(results, confidence),
                     table1_section(results, confidence), *per_group_sections(results),
                     *compression_sections(results, confidence)]
    sections += [*remedies_section(results, seeds, confidence), *precision_sections(results), *int8_sections(results),
                 *calibration_sections(calibration_sets or {}), *mixed_precision_sections(results),
                 _figures_section(results)]
    return sections


def _figures_section(results: dict[str, dict]) -> Section:
    synthetic = any(r["synthetic"] for r in results.values())
    confidence = next(iter(results.values()))["confidence"]
    return Section("Figures", (
        Figure("per_group", "rates_by_group", per_group_table(results), synthetic=synthetic),
        Figure("gaps", "gaps_with_intervals", gaps_table(results), synthetic=synthetic, confidence=confidence),
        Figure("pareto", "pareto_scatter", pareto_table(results), synthetic=synthetic)))


def build_document(per_seed: dict[int, dict[str, dict]], *, calibration_sets: dict[str, dict] | None = None,
                   verify: dict | None = None, sweep: dict[int, dict] | None = None) -> Document:
    """The whole report: across-seed tables over every training seed, detail tables of the first seed, the sweep's
    curves and the verification branch when their metrics are given."""
    seed = min(per_seed)
    results = per_seed[seed]
    first = next(iter(results.values()))
    seeds = seed_table(per_seed, tuple(dict.fromkeys(("accuracy_gap",) + headline_gaps(first))), first["confidence"])
    sections = classification_sections(results, calibration_sets, seeds, seed)
    if sweep and sweep[min(sweep)]["trends"]["curves"]:
        sections.append(sweep_section(sweep))
    if verify is not None:
        sections.append(verification_section(verify))
    return Document(TITLE, intro(first), tuple(sections))


def plot_tables(results: dict[str, dict], verify: dict | None, sweep: dict | None = None) -> dict[str, pd.DataFrame]:
    """plots/<name>.csv for `dvc plots`: one seed's per-group rates, gaps and Pareto table; its sweep's curves, heatmap
    and Pareto table; verification SER (by bits), accuracy per race, and each race's accuracy along every bits curve."""
    tables = {"per_group": per_group_table(results), "gaps": gaps_table(results), "pareto": pareto_table(results)}
    if sweep is not None:
        tables.update(plot_frames(sweep))
    if verify is not None:
        tables["verify_ser"], tables["verify_per_race"] = verification_tables(verify)
        tables["verify_curve"] = curve_table(verify)
    return tables


def summary_metrics(per_seed: dict[int, dict[str, dict]], verify: dict | None) -> dict:
    """metrics/summary.json: the headline keys as means over training seeds, and the verification keys."""
    out = summary_over_seeds(per_seed)
    if verify is not None:
        out["verify"] = verification_summary(verify)
    return out


def row_files(summary: dict) -> tuple[dict[str, dict], dict[str, dict] | None]:
    """The per-variant metrics files, from ``summary`` (:func:`summary_metrics`): classification rows by slot, and
    verification rows by variant (None without the verification branch). Each name becomes a file name."""
    rows = variant_rows(summary)
    verify_rows = verification_rows(summary["verify"]) if "verify" in summary else None
    for name in [*rows, *(verify_rows or {})]:
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise FairquantError(f"variant {name!r} cannot name a metrics file (a path separator or a leading dot); "
                                 "rename the slot or variant")
    return rows, verify_rows


def write_rows(folder: Path, rows: dict[str, dict]) -> None:
    """``folder``/<name>.json per row, the folder replaced whole (a slot dropped from params leaves no stale file)."""
    with atomic_dir(folder) as staged:
        for name, row in rows.items():
            write_json(staged / f"{name}.json", row)


def write_report(per_seed: dict[int, dict[str, dict]], *, summary_path: Path, plots_dir: Path,
                 calibration_sets: dict[str, dict] | None = None, verify: dict | None = None,
                 sweep: dict[int, dict] | None = None, sweep_summary_path: Path | None = None,
                 exemplars: Section | None = None, variants_dir: Path | None = None,
                 verify_variants_dir: Path | None = None) -> None:
    """Everything the report stage writes: summary metrics (and the sweep's), one metrics file per variant (a row of
    `dvc metrics show`: ``variants_dir``, and ``verify_variants_dir`` with the verification branch), plot tables,
    figures, plots/report.md, plots/report.html (the same document, figures inlined, plus the ``exemplars`` section
    when given) and plots/tables/<name>.tex (:func:`fairquant.report.latex.latex_tables`; the folder is replaced
    whole). All of it is computed (the figures drawn into a temporary folder) before the first file is written, so
    that metrics it cannot read leave no partial output."""
    tables = plot_tables(per_seed[min(per_seed)], verify, sweep[min(sweep)] if sweep else None)
    document = build_document(per_seed, calibration_sets=calibration_sets, verify=verify, sweep=sweep)
    summary = summary_metrics(per_seed, verify)
    rows, verify_rows = row_files(summary)
    curves = sweep_metrics(sweep) if sweep else None
    tex = latex_tables(document)
    if (plots_dir / LATEX_DIR).exists() and not (plots_dir / LATEX_DIR).is_dir():
        raise FairquantError(f"{plots_dir / LATEX_DIR} is a file; the report writes its LaTeX tables to a folder there: "
                             "remove the file")
    plots_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{plots_dir.name}.", dir=plots_dir.parent) as staged:
        staged = Path(staged)  # every file drawn and written here first: a failure leaves plots_dir as it was
        markdown = render_markdown(document, assets=staged)
        sections = document.sections + ((exemplars,) if exemplars is not None else ())
        page = render_html(Document(document.title, document.intro, sections))
        for name, frame in tables.items():
            write_csv(staged / f"{name}.csv", frame)
        (staged / LATEX_DIR).mkdir()
        for name, source in tex.items():
            (staged / LATEX_DIR / f"{name}.tex").write_text(source, encoding="utf-8")
        (staged / "report.md").write_text(markdown, encoding="utf-8")
        (staged / "report.html").write_text(page, encoding="utf-8")
        _move_into(staged, plots_dir)
    write_json(summary_path, summary)
    if variants_dir is not None:
        write_rows(variants_dir, rows)
    if verify_variants_dir is not None and verify_rows is not None:
        write_rows(verify_variants_dir, verify_rows)
    if sweep_summary_path is not None:
        write_json(sweep_summary_path, curves or {})


def _move_into(staged: Path, plots_dir: Path) -> None:
    """Each staged file replaces its namesake in ``plots_dir`` (other files there are kept); the LaTeX folder is
    replaced whole."""
    plots_dir.mkdir(parents=True, exist_ok=True)
    with atomic_dir(plots_dir / LATEX_DIR) as latex:
        for tex in (staged / LATEX_DIR).iterdir():
            os.replace(tex, latex / tex.name)
    for path in sorted(staged.rglob("*")):
        if path.is_file() and LATEX_DIR not in path.relative_to(staged).parts[:1]:
            target = plots_dir / path.relative_to(staged)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
