"""Troubleshooting catalogue: params (README, Troubleshooting). Each case id is a README row.

Every case runs the prepare stage in-process as a user would (`python -m stages.prepare --out ... --params ...`):
a params mistake is refused when the file loads, before any data is read; a mistake against the data is refused
by prepare's checks before anything is written. Each must give exit status 2, one `error: ` line naming the problem
and its fix, and no output."""

import re
import shutil
from pathlib import Path

import pytest
import torch

from tests.test_stages import SMALL, prepared, assert_clean_failure, run_in_process, run_stage  # noqa: F401  (the prepared fixture)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = (ROOT / "params.yaml").read_text()


def edited(*replacements: tuple[str, str]) -> str:
    """The shipped params.yaml with each (regex, replacement) applied exactly once: a user's edit, comments kept."""
    text = SHIPPED
    for pattern, replacement in replacements:
        text, count = re.subn(pattern, replacement, text, count=1, flags=re.MULTILINE)
        assert count == 1, f"{pattern!r} is not in params.yaml"
    return text


# A params file as written (the text, so that YAML's own reading is part of the case) -> the message expected.
FILE_CASES = [
    pytest.param("", "mine.yaml is empty; copy the shipped params.yaml", id="params-empty-file"),
    pytest.param("# seeds: [0, 1]\n# finetune:\n#   epochs: 2\n", "mine.yaml is empty", id="params-only-comments"),
    pytest.param("- data\n- finetune\n", "mine.yaml: expected a mapping of sections, found list",
                 id="params-not-a-mapping"),
    pytest.param(edited((r"^data:\n", "data: 3\nold_data:\n")), "section 'data' must be a mapping of its keys, found 3",
                 id="params-section-not-a-mapping"),
    pytest.param("seeds: [0]\ndata:\nfinetune:\n  epochs: 2\n",
                 "mine.yaml:2:1: section 'data' is empty (nothing indented below it)", id="params-section-empty"),
    pytest.param(edited((r"^  epochs: 4\n", "  epochs: 4\n  epochs: 8\n")),
                 "duplicate key 'epochs' in 'finetune' (first at line 65); YAML would keep only the last one",
                 id="params-duplicate-key"),
    pytest.param("seeds: [0]\nmodel: {arch: resnet18, arch: vit_tiny}\n",
                 "mine.yaml:2:25: duplicate key 'arch' in 'model' (first at line 2, column 9); YAML would keep only "
                 "the last one", id="params-duplicate-key-on-one-line"),
    pytest.param(SHIPPED + "\nfinetune:\n  epochs: 2\n", "duplicate key 'finetune' (first at line 64)",
                 id="params-duplicate-section"),
    pytest.param(edited((r"^  epochs: 4", "\tepochs: 4")), "mine.yaml:65:1: not valid YAML (found character '\\t' "
                 "that cannot start any token); indent with spaces, not tabs", id="params-tab-indent"),
    pytest.param(edited((r"^  lr: 0.05", " lr: 0.05")), "mine.yaml:67:2: not valid YAML", id="params-bad-indent"),
    pytest.param(edited((r"^    - Male\n", "    [Male\n")), "not valid YAML", id="params-unclosed-bracket"),
    pytest.param(edited((r"^  epochs: 4", "  epochs: true")), "mine.yaml:65:3: 'finetune.epochs': expected a valid "
                 "integer; found True; YAML read a boolean", id="params-boolean-for-a-number"),
    pytest.param(edited((r"^  privileged_group: Female", "  privileged_group: no")),
                 "'evaluate.privileged_group': expected a valid string; found False; YAML reads an unquoted "
                 "yes/no/on/off/true/false as a boolean: quote the word you meant (with dvc exp run: -S "
                 "\"evaluate.privileged_group='no'\")", id="params-yaml-no-is-false"),
    pytest.param(edited((r"^  bits: 8  ", "  bits: 8.5")), "'quantize_ptq.bits': expected a valid integer; found 8.5; "
                 "write a whole number", id="params-fractional-integer"),
    pytest.param(edited((r"^  epochs: 4", "  epochs: '4'")), "'finetune.epochs': expected a valid integer; found '4'",
                 id="params-quoted-number"),
    pytest.param(edited((r"^seeds:.*\n  - 0\n", "seeds: 0\n")), "'seeds': expected a valid list; found 0",
                 id="params-seeds-not-a-list"),
    pytest.param(edited((r"^  - 0\n", "  - 0\n  - 0\n")), "seeds lists a seed more than once ([0, 0])",
                 id="params-seed-twice"),
    pytest.param(edited((r"^    tolerance: 0.02", "    tolerance: null")),
                 "mitigate.during_prune lists ceag but mitigate.ceag.tolerance is null", id="params-ceag-no-tolerance"),
    pytest.param(edited((r"^  precision: \[\]", "  precision: [sensitivity]"), (r"^    high_bits: 8", "    high_bits: 4")),
                 "mitigate.sensitivity.high_bits is 4, not above bits (4)", id="params-sensitivity-high-bits-not-higher"),
]

# Dotted overrides of the shipped file (tests.test_stages.stage_params) -> the message expected.
OVERRIDE_CASES = [
    pytest.param({"finetune.epoch": 2}, "unknown key 'finetune.epoch' (found 2); remove it or fix its spelling",
                 id="params-unknown-key"),
    pytest.param({"model.arch": "vgg16"}, "'model.arch': expected 'resnet18'", id="params-unknown-choice"),
    pytest.param({"generate.minority_share": 1.5}, "'generate.minority_share': expected less than 1; found 1.5",
                 id="params-out-of-range"),
    pytest.param({"data.target": "Male"}, "data.target 'Male' is also in data.protected, but data.task is binary",
                 id="params-target-is-protected"),
    pytest.param({"mitigate.post_on": ["fp32", "ptqq"]}, "mitigate.post_on names 'ptqq', a slot this study does not "
                 "make; choose among fp32, ptq,", id="params-post-on-unknown-slot"),
    pytest.param({"mitigate.during_kmeans": ["ceag"]}, "mitigate.during_kmeans lists ceag but quantize_kmeans.epochs "
                 "is 0", id="params-during-kmeans-without-epochs"),
    pytest.param({"mitigate.calibration_sets": ["balanced", "train"]}, "mitigate.calibration_sets lists train, "
                 "quantize_ptq's own calibration set", id="params-calibration-set-is-ptqs-own"),
    pytest.param({"sweep.ptq": ["w8a8", "w4a4", "w8a8"]}, "'sweep.ptq': lists ['w8a8'] more than once",
                 id="params-sweep-point-twice"),
    pytest.param({"verify.bits": [8, 4, 8]}, "verify.bits lists a value more than once ([8, 4, 8])",
                 id="params-verify-bits-twice"),
    pytest.param({"mitigate.after": ["caleqodds", "caleqodds"]}, "mitigate.after lists a value more than once",
                 id="params-remedy-twice"),
    pytest.param({"data.target": ""}, "'data.target' is an empty text; write a value, or remove the key for its default",
                 id="params-empty-text"),
    pytest.param({"data.positive": []}, "data.positive is an empty list: no value of the target would be positive",
                 id="params-positive-empty"),
    pytest.param({"data.folder": {"table": "faces.csv"}}, "data.folder is changed from its defaults but data.source is "
                 "synthetic, which never reads it", id="params-folder-settings-unused"),
    pytest.param({"data.source": "folder", "data.folder": {"table": "../x.csv"}}, "data.folder.table is '../x.csv', "
                 "outside data.root; put the table in the dataset root", id="params-folder-table-leaves-root"),
    pytest.param({"quantize_ptq.calibration_size": 1024}, "quantize_ptq.calibration_size is 1024, more than its train "
                 "set holds (calibration.size: 512)", id="params-calibration-size-too-large"),
    pytest.param({"verify.data": {"races": ["African", "Asian", "African"]}}, "verify.data.races names African more "
                 "than once", id="params-verify-races-twice"),
    pytest.param({"distributed.nproc": 0}, "'distributed.nproc': expected greater than or equal to 1; found 0",
                 id="params-distributed-nproc-zero"),
    pytest.param({"distributed.backend": "nccl", "finetune.device": "cpu"}, "distributed.backend is nccl but "
                 "finetune.device is cpu: nccl carries CUDA tensors only; set distributed.backend to auto (gloo on the "
                 "CPU) or finetune.device to cuda/auto", id="params-distributed-nccl-on-cpu"),
    pytest.param({"distributed.nproc": 4, "quantize_qat.batch_size": 2}, "quantize_qat.batch_size is 2 but "
                 "distributed.nproc is 4: each process needs a row of every batch; raise quantize_qat.batch_size to at "
                 "least 4 or lower distributed.nproc", id="params-distributed-batch-below-nproc"),
    pytest.param({"distributed.nproc": 4, "mitigate.before_compression": ["fairalm"], "mitigate.fairalm.batch_size": 2},
                 "mitigate.fairalm.batch_size is 2 but distributed.nproc is 4: each process needs a row of every batch; "
                 "raise mitigate.fairalm.batch_size to at least 4 or lower distributed.nproc",
                 id="params-distributed-remedy-batch-below-nproc"),
]

# Against the data (the session's tiny CelebA-layout set): refused at prepare, before anything is written.
DATA_CASES = [
    pytest.param({"data.protected": ["Bald"]}, "protected attribute 'Bald' has the single value 'not Bald' in all "
                 "120 samples: no group to compare with", id="params-protected-single-value"),
    pytest.param({"data.protected": ["No_Beard"], "evaluate.privileged_group": "No_Beard"},
                 "protected group No_Beard = not No_Beard has no test sample (6 samples in all); its metrics would be "
                 "undefined: protect coarser attributes (data.protected), try another data.seed where the split is drawn",
                 id="params-group-missing-from-test"),
    pytest.param({"evaluate.privileged_group": "female"}, "evaluate.privileged_group is 'female', not a group of the "
                 "data (groups of data.protected ['Male']: Female, Male)", id="params-privileged-group-not-a-group"),
    pytest.param({"evaluate.privileged_group": None}, "evaluate.privileged_group is null, but evaluate takes signed "
                 "differences against it; set it to one of the groups: Female, Male", id="params-privileged-group-null"),
    pytest.param({"data.protected": ["Male", "Young"]}, "evaluate.privileged_group is 'Female', not a group of the "
                 "data", id="params-privileged-group-not-intersectional"),
    pytest.param({"data.protected": ["Race"]}, "unknown protected attribute 'Race'", id="params-unknown-protected"),
    pytest.param({"data.target": "Bald"}, "never occurs in target 'Bald'", id="params-target-single-class"),
]

MULTICLASS_KIND = {"data.target": "kind", "data.task": "multiclass", "data.protected": ["label"],
                   "evaluate.privileged_group": "0", "mitigate.before_compression": [], "mitigate.after": []}
RENAME = "a category really named like a missing value (None, NA, null) must be renamed in the labels"
# (column, the text of its three gaps, params over the folder's defaults) -> the message expected
NULL_GROUP_CASES = [
    pytest.param("race", "nan", {}, "protected attribute 'race' is empty (null) in 3 of 24 samples (first: "
                 "images/04.jpg); fill the value in the dataset's labels or drop those rows", id="params-protected-null-values"),
    pytest.param("kind", "nan", MULTICLASS_KIND, "the target is empty (null) in 3 of 24 samples (first: images/04.jpg); "
                 "fill the value in the dataset's labels or drop those rows: a missing value is not a class",
                 id="params-multiclass-target-null-values"),
    pytest.param("race", "N/A", {}, "protected attribute 'race' is empty (null) in 3 of 24 samples",
                 id="params-protected-na-text"),
    pytest.param("race", "None", {}, f"protected attribute 'race' is empty (null) in 3 of 24 samples (first: "
                 f"images/04.jpg); fill the value in the dataset's labels or drop those rows: a missing value is not a "
                 f"group ({RENAME})", id="params-protected-group-named-none"),
    pytest.param("label", "NA", {}, "the target is empty (null) in 3 of 24 samples (first: images/04.jpg)",
                 id="params-binary-target-null-values"),
]

# Refused when a training stage starts (what this machine has), before it trains or writes: the finetune stage.
MACHINE_CASES = [
    pytest.param({"distributed.nproc": 2, "distributed.backend": "nccl"}, "distributed.backend is nccl but training "
                 "runs on the CPU (no CUDA device visible or the section's device is cpu); set distributed.backend to "
                 "auto or gloo", id="params-distributed-nccl-without-cuda"),
]

CASES = FILE_CASES + OVERRIDE_CASES + DATA_CASES + NULL_GROUP_CASES + MACHINE_CASES


@pytest.mark.parametrize("text, message", FILE_CASES)
def test_a_bad_params_file_is_refused_on_load(tmp_path, text, message):
    """The message names the file actually loaded (--params mine.yaml), at the line and column where known."""
    (tmp_path / "mine.yaml").write_text(text)
    out = tmp_path / "prepared"
    result = run_in_process("prepare", ["--out", str(out), "--params", "mine.yaml"], tmp_path)
    assert_clean_failure(result, message, out)
    assert result.stderr.startswith("error: mine.yaml")


@pytest.mark.parametrize("params, message", OVERRIDE_CASES)
def test_params_that_contradict_each_other_are_refused_on_load(tmp_path, params, message):
    out = tmp_path / "prepared"
    result = run_stage("prepare", ["--out", str(out)], tmp_path, {"data.root": str(tmp_path / "absent"), **params})
    assert_clean_failure(result, message, out)



@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a CUDA device: nccl can run")
@pytest.mark.parametrize("params, message", MACHINE_CASES)
def test_params_this_machine_cannot_train_with_are_refused_when_training_starts(tmp_path, prepared, params, message):  # noqa: F811
    out, live = tmp_path / "model", tmp_path / "live"
    result = run_stage("finetune", ["--seed", "0", "--data", str(prepared), "--out", str(out), "--live", str(live)],
                       tmp_path, {**SMALL, **params})
    assert_clean_failure(result, message, out)
    assert not live.exists()


@pytest.mark.parametrize("params, message", DATA_CASES)
def test_params_that_do_not_fit_the_data_are_refused_at_prepare(tmp_path, tiny_celeba, params, message):
    out = tmp_path / "prepared"
    result = run_stage("prepare", ["--out", str(out)], tmp_path, {"data.root": str(tiny_celeba), **params})
    assert_clean_failure(result, message, out)


NULL_ROWS = (4, 9, 14)  # one in each split of the table below


@pytest.fixture(scope="module")
def labelled_folder(tmp_path_factory, tiny_celeba):
    """A tiny labelled folder: 24 images and the rows of labels.csv (file,label,race,kind,split), to damage."""
    root = tmp_path_factory.mktemp("folder")
    images = sorted((tiny_celeba / "img_align_celeba").iterdir())
    (root / "images").mkdir()
    rows = []
    for k in range(24):
        shutil.copy(images[k], root / "images" / f"{k:02d}.jpg")
        split = ("train", "val", "test")[k // 5 % 3] if k < 15 else ("train", "val", "test", "train")[k % 4]
        rows.append({"file": f"images/{k:02d}.jpg", "label": str(k // 2 % 2), "race": ("White", "Black")[k % 2],
                     "kind": ("cat", "dog", "fox")[k % 3], "split": split})
    return root, rows


@pytest.mark.parametrize("column, gap, params, message", NULL_GROUP_CASES)
def test_missing_values_are_refused_not_made_a_group_or_a_class(tmp_path, labelled_folder, column, gap, params,
                                                                message):
    """Before: the three rows became a group (or a class) called 'nan', or, in a binary target, negatives. The
    folder reader keeps such texts (a table written from a column with missing values holds them), so it is
    prepare's check (or the target's, in every reader) that refuses them."""
    source, rows = labelled_folder
    root = tmp_path / "folder"
    shutil.copytree(source / "images", root / "images")
    lines = ["file,label,race,kind,split"] + [
        ",".join(gap if k in NULL_ROWS and name == column else row[name] for name in ("file", "label", "race", "kind",
                                                                                        "split"))
        for k, row in enumerate(rows)]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "prepared"
    result = run_stage("prepare", ["--out", str(out)], tmp_path,
                       {"data.source": "folder", "data.root": str(root), "data.target": "label",
                        "data.protected": ["race"], "evaluate.privileged_group": "White", **params})
    assert_clean_failure(result, message, out)


def test_null_texts_are_pandas_default_na_strings():
    """The texts read as missing are pandas' own list (read_csv's default na_values), in any case."""
    from pandas._libs.parsers import STR_NA_VALUES

    from fairquant.data.loaders import NULL_TEXTS

    assert {text.lower() for text in STR_NA_VALUES} | {"nat"} == NULL_TEXTS


# --- valid input, read as meant -----------------------------------------------------------------------------------


def test_a_whole_number_written_as_a_decimal_is_read_as_that_integer(tmp_path):
    """Found in review: `finetune.epochs: 4.0` (what hand edits and `dvc exp run -S` write) was refused."""
    from fairquant.params import load_params

    (tmp_path / "mine.yaml").write_text(edited((r"^  epochs: 4\n", "  epochs: 4.0\n"), (r"^  bits: 8  ", "  bits: 8.0  ")))
    params = load_params(tmp_path / "mine.yaml")
    assert params.finetune.epochs == 4 and isinstance(params.finetune.epochs, int)
    assert params.quantize_ptq.bits == 8 and isinstance(params.quantize_ptq.bits, int)


def test_a_cross_field_error_points_at_the_key_it_names(tmp_path):
    """Found in review: the line was the section's (`mitigate:`), not that of the key at fault."""
    from fairquant.errors import FairquantError
    from fairquant.params import load_params

    text = edited((r"^    - ptq\n  precision:", "    - ptqq\n  precision:"))
    (tmp_path / "mine.yaml").write_text(text)
    line = next(k for k, row in enumerate(text.splitlines(), 1) if row.startswith("  post_on:"))
    with pytest.raises(FairquantError, match=rf"^{re.escape(str(tmp_path / 'mine.yaml'))}:{line}:3: 'mitigate': "
                                             r"mitigate\.post_on names 'ptqq'"):
        load_params(tmp_path / "mine.yaml")
