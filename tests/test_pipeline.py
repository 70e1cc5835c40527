"""The real pipeline under `dvc repro` in a temporary git repository, on a shrunken params profile: one study,
built once, then its outputs, a clean re-run elsewhere, what a params change re-runs, the study shared with a
teammate through an SSH remote, the experiment queue, one of its experiments shared the same way, and the
multi-class twin as an experiment of the same repository (the verification branch reused). The tests run in order
on the one repository."""

import copy
import html
import json
import time

import pandas as pd
import pytest
import yaml

from tests import sftp
from tests.study import sh, shrunken_params, study_repo
from tests.test_metrics_files import MULTICLASS_KEYS, VARIANT_KEYS, VERIFY_KEYS

VERIFY_VARIANTS = {"fp32", "ptq-w8a8-train", "ptq-w8a8-synthetic", "ptq-w4a4-train", "ptq-w4a4-synthetic",
                   "quantface-w8a8-train", "quantface-w8a8-synthetic", "quantface-w4a4-train",
                   "quantface-w4a4-synthetic"}
SLOTS = {"fp32", "ptq", "qat", "kmeans", "prune", "fairalm", "fairalm+ptq", "fairalm-control", "fairalm-control+ptq",
         "ceag+prune", "fp32+caleqodds", "ptq+caleqodds"}




@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The shrunken default after `dvc repro`: (repository, environment, params as written)."""
    repo = tmp_path_factory.mktemp("pipeline") / "study"
    params = shrunken_params()
    env = study_repo(repo, params)
    sh("dvc repro", repo, env)
    sh("git add -A && git commit -qm baseline", repo, env)
    return repo, env, params


@pytest.mark.slow
def test_the_default_study_end_to_end(study):
    repo, env, _ = study
    summary = json.loads((repo / "metrics" / "summary.json").read_text())
    assert set(summary) == SLOTS | {"synthetic_data", "seeds", "verify"} and summary["synthetic_data"] is True
    # the verification branch: every variant's SER, STD, mean and per-race accuracy, and its pairs table
    trends = {k for k in summary["verify"] if k.startswith("trend ")}  # each bits curve: SER and accuracy slopes
    assert trends == {"trend ptq-train", "trend ptq-synthetic", "trend quantface-train", "trend quantface-synthetic"}
    assert summary["verify"]["trend ptq-train"]["ser_verdict"] == "undefined"  # two bit-widths: no trend claimed
    assert set(summary["verify"]) - trends == VERIFY_VARIANTS | {"synthetic_data"} and summary["verify"]["synthetic_data"]
    for name in VERIFY_VARIANTS:
        assert {"ser", "verification_std", "verification_accuracy", "acc_African", "acc_Asian", "acc_Caucasian",
                "acc_Indian"} <= set(summary["verify"][name])
        pairs = pd.read_parquet(repo / "data" / "predictions" / "verify" / name / "pairs.parquet")
        assert list(pairs.columns) == ["pair_id", "fold", "race", "genuine", "score"] and len(pairs) == 4 * 20
    verify = json.loads((repo / "metrics" / "verify.json").read_text())
    assert verify["variants"]["ptq-w8a8-train"]["variant"]["kernels"] == "int8"
    assert verify["variants"]["ptq-w4a4-synthetic"]["vs_real_calibration"]["reference"] == "ptq-w4a4-train"
    assert "Face verification" in (repo / "plots" / "report.md").read_text()
    prepared_verify = json.loads((repo / "data" / "prepared_verify" / "info.json").read_text())
    assert "recordio" in json.dumps(prepared_verify), prepared_verify  # trained from train.rec / train.idx
    assert summary["seeds"] == 1
    evaluated = {slot: json.loads((repo / "metrics" / "eval" / "s0" / f"{slot}.json").read_text()) for slot in SLOTS}
    for slot in SLOTS:  # one seed: the headline is that seed's value
        assert summary[slot]["accuracy"] == evaluated[slot]["overall"]["accuracy"] and summary[slot]["size_bytes"] > 0
    assert summary["fp32"]["size_bytes"] / summary["ptq"]["size_bytes"] > 3.9
    assert summary["fp32"]["size_bytes"] / summary["kmeans"]["size_bytes"] > 7.5
    assert summary["ptq"]["latency_ms"] is None and summary["qat"]["latency_ms"] is None  # latency.repeats: 0
    # evaluate.device auto: float models score on CUDA where one is visible, real int8 always on the CPU
    import torch

    infos = [json.loads(path.read_text()) for path in (repo / "data" / "predictions" / "s0" / "variants").glob(
        "*/info.json")]
    assert len(infos) >= 10 and {info["details"]["device"] for info in infos if info["kernels"] == "int8"} == {"cpu"}
    assert {info["details"]["device"] for info in infos if info["kernels"] != "int8"} == {
        "cuda" if torch.cuda.is_available() else "cpu"}
    names = {slot: evaluated[slot]["variant"] for slot in SLOTS - {"fp32"}}
    assert names == {"ptq": "ptq-w8a8-train", "qat": "qat-w4a4", "kmeans": "kmeans-k16", "prune": "prune-s80",
                     "fairalm": "fairalm", "fairalm+ptq": "fairalm+ptq-w8a8-train", "ceag+prune": "ceag+prune-s80",
                     "fairalm-control": "fairalm-control", "fairalm-control+ptq": "fairalm-control+ptq-w8a8-train",
                     "fp32+caleqodds": "fp32+caleqodds", "ptq+caleqodds": "ptq-w8a8-train+caleqodds"}
    # each remedy is compared with the variant it fixes; CEAG's constraint is measured on train, val and test
    assert {slot: evaluated[slot].get("baseline") for slot in SLOTS} == {
        "fp32": None, "ptq": None, "qat": None, "kmeans": None, "prune": None, "fairalm": "fairalm-control",
        "fairalm+ptq": "fairalm-control+ptq", "fairalm-control": None, "fairalm-control+ptq": None,
        "ceag+prune": "prune", "fp32+caleqodds": "fp32", "ptq+caleqodds": "ptq"}
    assert set(evaluated["ceag+prune"]["constraint"]) == {"train", "validation", "test", "test_baseline", "multipliers"}
    assert evaluated["fairalm+ptq"]["kernels"] == "int8"
    assert (repo / "metrics" / "train" / "s0" / "fairalm" / "plots" / "metrics" / "fairalm" / "eta.tsv").is_file()
    variant = evaluated["ptq"]
    assert variant["kernels"] == "int8" and variant["split"] == "test" and "vs_fp32" in variant
    check = variant["details"]["int8_check"]  # the kernels were checked against their q/dq reference, and passed
    assert check["sqnr_db"] >= check["quant_sqnr_db"] - check["tolerance_db"] and check["cpu_capability"]
    assert "## int8 kernels" in (repo / "plots" / "report.md").read_text()
    report = (repo / "plots" / "report.md").read_text()
    assert "SYNTHETIC" in report and "| qat-w4a4 |" in report and "simulated" in report
    assert "## Calibration sets" in report and "| distilled |" in report
    assert "## Across training seeds (1: 0)" in report and "one seed" in report
    assert "## Remedies" in report and "| ceag+prune-s80 | prune-s80 |" in report and "pareto" in report
    # the sweep: the curve's points against the study's own fp32 (reused), the trend, heatmap, Pareto and LaTeX
    sweep = json.loads((repo / "metrics" / "sweep.json").read_text())
    assert set(sweep) == {"face_resnet10 ptq W=A (train)", "face_resnet10 qat W=A"}
    curve = sweep["face_resnet10 ptq W=A (train)"]
    assert {"w8a8", "w4a4", "w2a2", "tpr_gap_slope", "tpr_gap_verdict"} <= set(curve)
    assert curve["tpr_gap_verdict"] in ("widens", "narrows", "no clear trend", "undefined")
    points = repo / "metrics" / "sweep" / "s0" / "points" / "face_resnet10"
    assert json.loads((points / "ptq-w8a8-train.json").read_text())["kernels"] == "int8"
    assert (repo / "data" / "sweep" / "s0" / "models" / "face_resnet10" / "fp32" / "model.pt").read_bytes() == \
        (repo / "data" / "models" / "s0" / "fp32" / "model.pt").read_bytes()  # the study's own model, reused
    for name in ("groups.csv", "gaps.csv", "heatmap.csv", "pareto.csv", "heatmap.png", "pareto.png"):
        assert (repo / "plots" / "sweep" / name).is_file(), name
    assert "## Sweep: how each group's damage grows" in report and "### Curve: face_resnet10 ptq W=A (train)" in report
    assert (repo / "plots" / "tables" / "sweep_curve.tex").is_file()
    assert (repo / "plots" / "tables" / "table1_accuracy_eo_fpr.tex").is_file()
    plots = json.loads(sh("dvc plots show --json --split", repo, env))["data"]  # the custom templates render
    curve = plots["plots/sweep/groups.csv"][0]["content"]
    assert curve["description"].startswith("fairquant sweep") and curve["facet"]["row"]["field"] == "curve"
    import pyarrow.parquet as pq

    table = pq.read_table(repo / "data" / "predictions" / "s0" / "variants" / "ptq" / "test.parquet")
    assert table.schema.names == ["sample_id", "y_true", "y_score", "y_pred", "Male"]


def _markdown_table(text: str) -> tuple[list[str], list[list[str]]]:
    """A `--md` table's header cells and rows of cells."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    cells = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
    return cells[0], cells[2:]


def _cell(value, show: str = "metrics") -> str:
    """A value as DVC prints it: `metrics show` rounds to 5 decimals, `exp show` keeps 5 significant digits."""
    if not isinstance(value, float):
        return "-" if value is None else str(value)
    return str(round(value, 5)) if show == "metrics" else f"{value:.5g}"


@pytest.mark.slow
def test_dvc_metrics_show_is_one_row_per_variant(study):
    """`dvc metrics show --md` on the study: a row per variant file, the columns a fixed few keys (not one row of
    every variant's keys), the cells summary.json's values; the README's `dvc exp show` recipes give their columns."""
    repo, env, _ = study
    summary = json.loads((repo / "metrics" / "summary.json").read_text())
    variants, verify = repo / "metrics" / "variants", repo / "metrics" / "verify"
    assert {p.stem for p in variants.iterdir()} == SLOTS and {p.stem for p in verify.iterdir()} == VERIFY_VARIANTS
    for slot in SLOTS:  # the snapshot of key names: what users' --keep recipes name
        assert list(json.loads((variants / f"{slot}.json").read_text())) == VARIANT_KEYS
    for name in VERIFY_VARIANTS:
        assert list(json.loads((verify / f"{name}.json").read_text())) == VERIFY_KEYS
    header, rows = _markdown_table(sh("dvc metrics show --md", repo, env))
    paths = [row[0] for row in rows]
    assert sorted(paths) == sorted([f"metrics/variants/{s}.json" for s in SLOTS] +
                                   [f"metrics/verify/{v}.json" for v in VERIFY_VARIANTS]), paths
    assert header[0] == "Path" and len(header) <= 15 and set(header[1:]) <= set(VARIANT_KEYS + VERIFY_KEYS), header
    assert "latency_ms" not in header  # latency.repeats: 0, null in every row: DVC shows no column for it
    ptq = dict(zip(header, rows[paths.index("metrics/variants/ptq.json")]))
    assert ptq["accuracy"] == _cell(summary["ptq"]["accuracy"]) and ptq["ser"] == "-"
    assert ptq["size_bytes"] == str(summary["ptq"]["size_bytes"])
    row = dict(zip(header, rows[paths.index("metrics/verify/ptq-w4a4-train.json")]))
    assert row["ser"] == _cell(summary["verify"]["ptq-w4a4-train"]["ser"]) and row["tpr_gap"] == "-"
    header, rows = _markdown_table(sh("dvc metrics show --md metrics/variants", repo, env))
    assert len(rows) == len(SLOTS) and set(header[1:]) <= set(VARIANT_KEYS)
    assert "fp32" in json.loads(sh("dvc metrics show --json metrics/summary.json", repo, env))[""]["data"][
        "metrics/summary.json"]["data"]  # the whole summary stays readable by name
    # the README's recipes (section "Reading the metrics")
    header, rows = _markdown_table(sh(
        "dvc exp show --md --drop '.*' --keep 'Experiment|quantize_ptq\\.(bits|calibration)$|"
        "metrics/variants/ptq\\.json:(accuracy|worst_group_accuracy|tpr_gap|fpr_gap|size_bytes)$' "
        "--sort-by metrics/variants/ptq.json:tpr_gap", repo, env))
    kept = [k for k in ("accuracy", "worst_group_accuracy", "tpr_gap", "fpr_gap", "size_bytes")
            if summary["ptq"][k] is not None]  # a null value (the tiny test split's FPR gap) has no column
    assert header == ["Experiment"] + [f"metrics/variants/ptq.json:{k}" for k in kept] + \
        ["quantize_ptq.bits", "quantize_ptq.calibration"], header
    assert dict(zip(header, rows[0]))["metrics/variants/ptq.json:tpr_gap"] == _cell(summary["ptq"]["tpr_gap"], "exp")
    header, _ = _markdown_table(sh("dvc exp show --md --drop '.*' --keep "
                                   "'Experiment|verify\\.(bits|calibration)$|metrics/verify/.*:ser$'", repo, env))
    assert sorted(header) == sorted(["Experiment", "verify.bits", "verify.calibration"] +
                                    [f"metrics/verify/{v}.json:ser" for v in VERIFY_VARIANTS]), header


@pytest.mark.slow
def test_the_html_report_is_one_file_with_every_section_and_the_flipped_images(study, tmp_path):
    """plots/report.html of the real study: self-contained (only data: images, no script, no stylesheet link), the
    Markdown report's every heading, and each compressor's flipped test images, labelled synthetic. Chromium opens a
    fixture's page in tests/test_html_report.py; here the page the stage wrote is parsed."""
    from tests.test_html_report import parsed

    repo, env, _ = study
    page = (repo / "plots" / "report.html").read_text(encoding="utf-8")
    resources = parsed(page)
    assert resources.loads and all(value.startswith("data:image/png;base64,") for _, _, value in resources.loads)
    assert not {"script", "link", "iframe", "object", "embed", "base"} & set(resources.tags)
    headings = [line.lstrip("#").strip() for line in (repo / "plots" / "report.md").read_text().splitlines()
                if line.startswith("#")]
    assert all(f">{html.escape(title)}</h" in page for title in headings), [
        t for t in headings if f">{html.escape(t)}</h" not in page]
    assert ">Flipped test images</h2>" in page and "SYNTHETIC images" in page
    for slot in ("ptq", "qat", "kmeans", "prune"):
        assert f"<summary><h3>{slot}</h3></summary>" in page
    dvc_page = tmp_path / "plots_page"  # `dvc plots show` of the study: DVC's page with vega inlined, no CDN
    sh(f"dvc plots show -o {dvc_page}", repo, env)
    assert "cdn.jsdelivr" not in (dvc_page / "index.html").read_text(encoding="utf-8")

@pytest.mark.slow
def test_a_clean_run_elsewhere_gives_the_same_bytes(study, tmp_path):
    """A clone of the same commit re-runs the stages that train, quantize to int8, predict, evaluate and report
    (-f: from the shared cache's inputs) and gets a byte-identical dvc.lock: every output hash. Every stage's
    recovery after a kill is checked the same way by benchmarks/faults.py."""
    repo, env, _ = study
    clone = tmp_path / "clone"
    sh(f"git clone -q {repo} {clone}", tmp_path, env)
    clone_env = {**env, "PYTHONPATH": str(clone)}
    sh(f"dvc cache dir {repo / '.dvc' / 'cache'} && dvc checkout -q", clone, clone_env)
    stages = ("finetune@0", "quantize_ptq@0", "quantize_qat@0", "mitigate_after@0-caleqodds-ptq", "predict@0",
              "evaluate@0", "verify_train", "report")
    for stage in stages:
        sh(f"dvc repro -f --single-item {stage}", clone, clone_env)
    assert (clone / "dvc.lock").read_text() == (repo / "dvc.lock").read_text()


@pytest.mark.slow
def test_a_params_change_reruns_what_reads_it(study):
    repo, env, params = study
    params = {**params, "seeds": [0, 1]}
    # Adding a training seed runs that seed's chain and the report, nothing of seed 0.
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = sh("dvc status", repo, env)
    changed = {line[:-1] for line in out.splitlines() if line.endswith(":") and not line.startswith((" ", "\t"))}
    assert changed == {"finetune@1", "calibration@1", "quantize_ptq@1", "quantize_qat@1", "quantize_kmeans@1",
                       "prune@1", "mitigate_before@1-fairalm", "quantize_ptq_mitigated@1-fairalm",
                       "mitigate_control@1-fairalm", "quantize_ptq_control@1-fairalm",
                       "mitigate_during_prune@1-ceag", "predict@1", "latency@1", "mitigate_after@1-caleqodds-fp32",
                       "mitigate_after@1-caleqodds-ptq", "evaluate@1", "sweep_finetune@1-face_resnet10",
                       "sweep_ptq@1-face_resnet10-w8a8-train", "sweep_ptq@1-face_resnet10-w4a4-train",
                       "sweep_ptq@1-face_resnet10-w2a2-train", "sweep_qat@1-face_resnet10-w4a4", "sweep_predict@1",
                       "sweep_evaluate@1", "report"}, out
    sh("git checkout params.yaml", repo, env)

    assert "up to date" in sh("dvc status", repo, env).lower()

    # A quantize key re-runs quantization and after, never prepare or finetune.
    out = sh("sed -i 's/  bits: 8/  bits: 6/' params.yaml && dvc status", repo, env)
    assert "quantize_ptq" in out and "finetune" not in out and "prepare" not in out and "quantize_qat" not in out
    sh("git checkout params.yaml", repo, env)


@pytest.fixture(scope="module")
def team(study, tmp_path_factory):
    """The study's teammates: an SSH server on 127.0.0.1 (tests/sftp.py) as the DVC remote and a bare git repository
    as the git remote `origin` of the study, which has pushed its baseline there. Yields (server, origin, the dvc
    client environment: a throwaway HOME, no ssh-agent)."""
    repo, env, _ = study
    folder = tmp_path_factory.mktemp("team")
    server, stop = sftp.start(folder / "sftp")
    origin = folder / "origin.git"
    ssh_env = sftp.client_env(env, folder / "home")
    sh(f"git init -q --bare {origin} && git remote add origin {origin} && git push -q origin HEAD", repo, ssh_env)
    yield server, origin, ssh_env
    stop()


def same_files(a, b, folders=("data", "metrics", "plots")) -> list[str]:
    """Paths under ``folders`` whose bytes differ between repositories ``a`` and ``b`` (or exist in one only)."""
    names = {p.relative_to(root) for root in (a, b) for folder in folders for p in (root / folder).rglob("*")
             if p.is_file()}
    return sorted(str(n) for n in names if not ((a / n).is_file() and (b / n).is_file()
                                                 and (a / n).read_bytes() == (b / n).read_bytes()))


@pytest.mark.slow
def test_the_study_shared_over_ssh(study, team):
    """`dvc push` to an SSH remote, a teammate's fresh clone of the git remote, `dvc pull`: the clone is up to date
    and holds the same bytes. The remote is the shipped default `shared`, pointed at the server per clone with
    `--local` (so that every commit, experiments' bases included, pushes there), as the README shows."""
    repo, _, _ = study
    server, origin, env = team
    for command in server.remote_config():
        sh(command, repo, env)
    out = sh("dvc push", repo, env)
    pushed = [p for p in (server.root / "fairquant-remote" / "files" / "md5").rglob("*") if p.is_file()]
    assert "files pushed" in out and len(pushed) > 100, out
    assert server.logins and set(server.logins) == {sftp.USER}  # it went through the server, as the configured user
    assert not (repo.parent / "fairquant-remote").exists()  # and not to the shipped local-directory default

    clone = origin.parent / "teammate"
    sh(f"git clone -q {origin} {clone}", origin.parent, env)
    for command in server.remote_config():
        sh(command, clone, env)
    sh("dvc pull", clone, env)
    assert "Data and pipelines are up to date" in sh("dvc status", clone, env)
    assert same_files(repo, clone) == []


@pytest.mark.slow
def test_the_experiment_queue_and_metrics_diff(study):
    repo, env, _ = study
    # A two-value sweep through the experiment queue, two workers, as the README shows (on k-means, whose
    # change re-runs the fewest stages: the queue's mechanics are the same for every key)
    sh("dvc exp run --queue -S 'quantize_kmeans.clusters=8,4'", repo, env)
    sh("dvc queue start -j 2 > queue.log 2>&1", repo, env)
    deadline = time.time() + 1800  # generous: a busy machine runs the two workers' stages slowly
    while time.time() < deadline:
        status = sh("dvc queue status", repo, env)
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(5)
    assert status.count("Success") == 2, status
    rows = json.loads(sh("dvc exp show --json", repo, env))
    experiments = [e for row in rows for e in (row.get("experiments") or [])]
    names = sorted(e["revs"][0]["name"] for e in experiments)
    assert len(names) == 2, names
    for name in names:
        logs = sh(f"dvc queue logs {name}", repo, env)
        assert "Running stage 'finetune@0'" not in logs and "Running stage 'prepare'" not in logs
        assert "Running stage 'quantize_kmeans@0'" in logs and "Running stage 'quantize_ptq@0'" not in logs
    diff = json.loads(sh(f"dvc metrics diff {names[0]} {names[1]} --json", repo, env))
    assert "size_bytes" in diff["metrics/variants/kmeans.json"]  # one row per variant: only k-means' moved
    assert "metrics/variants/fp32.json" not in diff and "metrics/variants/ptq.json" not in diff, diff
    _, rows = _markdown_table(sh(f"dvc metrics diff {names[0]} {names[1]} --md", repo, env))
    assert ["metrics/variants/kmeans.json", "size_bytes"] in [row[:2] for row in rows], rows
    table = sh("dvc exp show --md --drop '.*' --keep 'Experiment|quantize_kmeans.clusters|"
               "metrics/variants/kmeans\\.json:tpr_gap$'", repo, env)
    assert "quantize_kmeans.clusters" in table and "metrics/variants/kmeans.json:tpr_gap" in table
    sh("dvc queue stop", repo, env)

    # an evaluation setting re-runs only evaluate and report (no training: it keeps the suite short)
    out = sh("dvc exp run -S evaluate.bootstrap=300", repo, env)
    assert "Running stage 'evaluate@0'" in out and "Running stage 'finetune@0'" not in out
    diff = json.loads(sh("dvc metrics diff --json", repo, env))
    assert not any(path.startswith("metrics/variants/") for path in diff), diff  # no point estimate moved
    diff = json.loads(sh("dvc metrics diff --json --targets metrics/summary.json", repo, env))  # the intervals did
    assert "metrics/summary.json" in diff and "fp32.tpr_diff_ci_low" in diff["metrics/summary.json"]
    assert "fp32.accuracy" not in diff["metrics/summary.json"]
    shown = json.loads(sh("dvc exp show --json", repo, env))
    assert len(shown) >= 1
    assert "evaluate.bootstrap" in sh("dvc params diff", repo, env)


@pytest.mark.slow
def test_an_experiment_shared_between_teammates(study, team):
    """One of the queue's experiments goes from the study to the teammate's clone: `dvc exp push origin` (its git ref
    to the bare repository, its outputs to the SSH remote), `dvc exp pull origin` in the clone, where `dvc exp show`
    gives the same params, metrics and output hashes and `dvc exp apply` checks out the same bytes, up to date; then
    every experiment of the baseline, as the README's sweep across machines shares them."""
    repo, _, _ = study
    server, origin, env = team
    clone = origin.parent / "teammate"
    shown = experiments(repo, env)
    name = next(n for n, data in shown.items() if data["params"]["quantize_kmeans"]["clusters"] == 4)
    lock = yaml.safe_load(sh(f"git show {shown[name]['rev']}:dvc.lock", repo, env))
    out = next(o for o in lock["stages"]["quantize_kmeans@0"]["outs"] if o["path"] == "data/models/s0/kmeans")
    cache = repo / ".dvc" / "cache" / "files" / "md5"
    manifest = json.loads((cache / out["md5"][:2] / out["md5"][2:]).read_text())  # the folder's .dir listing
    model = next(entry["md5"] for entry in manifest if entry["relpath"] == "model.pt")
    stored = server.root / "fairquant-remote" / "files" / "md5" / model[:2] / model[2:]
    assert not stored.exists()  # the experiment's k-means model is new to the remote

    sh(f"dvc exp push origin {name}", repo, env)
    assert stored.read_bytes() == (cache / model[:2] / model[2:]).read_bytes()
    sh(f"dvc exp pull origin {name}", clone, env)
    pulled = experiments(clone, env)
    assert set(pulled) == {name}
    assert pulled[name] == shown[name]  # params, metrics, every output's hash, the commit

    sh(f"dvc exp apply {name}", clone, env)
    assert "Data and pipelines are up to date" in sh("dvc status", clone, env)
    assert (clone / out["path"] / "model.pt").read_bytes() == stored.read_bytes()
    assert (clone / "metrics" / "summary.json").read_text() == sh(f"git show {shown[name]['rev']}:metrics/summary.json",
                                                                   repo, env)  # exp show drops its null values
    assert "Everything is up to date" in sh("dvc pull", clone, env)

    # the sweep across machines (README): the rest of the baseline's experiments, pushed and pulled without names
    sh("dvc exp push origin", repo, env)
    sh("dvc exp pull origin", clone, env)
    assert experiments(clone, env) == shown and len(shown) == 3  # the queue's two and the workspace's run


def experiments(repo, env) -> dict:
    """`dvc exp show --json`'s experiments by name: their params.yaml, the metrics files (one per variant: the rows
    of `dvc metrics show`), outputs' hashes and commit."""
    rows = json.loads(sh("dvc exp show --json", repo, env))
    found = {}
    for row in rows:
        for experiment in row.get("experiments") or []:
            rev = experiment["revs"][0]
            data = rev["data"]
            found[rev["name"]] = {"params": data["params"]["params.yaml"]["data"],
                                  "metrics": {path: value.get("data") for path, value in data["metrics"].items()},
                                  "outs": data["outs"],
                                  "rev": rev["rev"]}
    return found


TWIN = {
    "generate": {"layout": "folder", "identities": 90},
    "data": {"source": "folder", "root": "data/raw/synthetic", "target": "Expression", "task": "multiclass",
             "positive": None, "protected": ["gender"], "folder": {"identity_column": "identity"}},
    "mitigate": {"before_compression": [], "after": [], "during_prune": ["ceag"], "calibration_sets": []},
    "sweep": {"ptq": ["w8a8", "w4a4"], "qat": []},
}
TWIN_SLOTS = {"fp32", "ptq", "qat", "kmeans", "prune", "ceag+prune"}
CLASSES = ["frowning", "neutral", "smiling"]


@pytest.mark.slow
def test_the_multiclass_twin_as_an_experiment(study):
    """The generated faces written as a labelled image folder (data.source: folder) with a three-way Expression
    target and gender protected (an attribute as the target, another as the group); every compressor, CEAG and a sweep
    curve run on it, the verification branch is reused. The class as the group (protected: the target itself) re-runs
    the whole branch from prepare, so it is tested without a second study: on this layout's loader
    (test_folder_layout), its metrics (test_multiclass_metrics) and its report (test_multiclass_report)."""
    repo, env, params = study
    params = copy.deepcopy(params)
    for section, values in TWIN.items():
        for key, value in values.items():
            if isinstance(value, dict):
                params[section][key].update(value)
            else:
                params[section][key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = sh("git commit -qam twin && dvc repro", repo, env)
    assert "Running stage 'verify_train'" not in out and "Running stage 'prepare'" in out
    raw = repo / "data" / "raw" / "synthetic"
    labels = pd.read_csv(raw / "labels.csv")
    assert set(labels.columns) >= {"file", "Expression", "gender", "identity"} and "split" not in labels.columns
    prepared = json.loads((repo / "data" / "prepared" / "info.json").read_text())
    assert prepared["source"] == "folder" and prepared["classes"] == CLASSES and prepared["synthetic"] is True
    samples = pd.read_parquet(repo / "data" / "prepared" / "samples.parquet")
    identity = labels.set_index("file").loc[samples["sample_id"], "identity"].to_numpy()
    assert (pd.DataFrame({"identity": identity, "split": samples["split"]}).groupby("identity")["split"].nunique()
            == 1).all()  # the drawn split is grouped by identity
    predictions = pd.read_parquet(repo / "data" / "predictions" / "s0" / "variants" / "ptq" / "test.parquet")
    assert list(predictions.columns) == ["sample_id", "y_true", "y_score", "y_pred", "y_prob", "gender"]
    assert predictions["y_prob"].map(len).eq(3).all()

    evaluated = {slot: json.loads((repo / "metrics" / "eval" / "s0" / f"{slot}.json").read_text()) for slot in TWIN_SLOTS}
    for slot, result in evaluated.items():
        assert result["task"] == "multiclass" and result["classes"]["names"] == CLASSES
        assert set(result["groups"]) == {"Female", "Male"} and result["class_as_group"] is False
        if slot != "fp32":
            act = result["vs_fp32"]["balancing_act"]
            assert set(act["groups"]) == {"Female", "Male"} and act["max_excess_drop"]["ci_low"] is not None
            assert set(result["vs_fp32"]["balancing_act_by_class"]["groups"]) == set(CLASSES)
    assert evaluated["ptq"]["kernels"] == "int8"
    assert evaluated["ceag+prune"]["constraint"]["test"]["rate"] == "accuracy"
    summary = json.loads((repo / "metrics" / "summary.json").read_text())
    assert {"worst_class", "worst_class_recall", "max_excess_drop", "max_class_excess_drop"} <= set(summary["ptq"])
    assert list(json.loads((repo / "metrics" / "variants" / "ptq.json").read_text())) == MULTICLASS_KEYS
    sweep = json.loads((repo / "metrics" / "sweep.json").read_text())
    assert {"accuracy_gap_slope", "w8a8", "w4a4"} <= set(sweep["face_resnet10 ptq W=A (train)"])
    report = (repo / "plots" / "report.md").read_text()
    assert "**Multi-class target, 3 classes**" in report and "## Per-class accuracy (recall" in report
    assert "## Accuracy drop vs fp32 and excess drop per group" in report and "accuracy gap change vs fp32" in report
    assert "Face verification" in report
