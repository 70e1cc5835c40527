"""data.source: folder (a root of images plus a CSV or parquet label table) and the generated multi-class twin."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_stages import assert_clean_failure, run_stage

from fairquant.data.folder import load_folder
from fairquant.data.loaders import load_dataset
from fairquant.data.synthetic import _expression_labels, _identities, generate_folder_like
from fairquant.errors import FairquantError
from fairquant.params import DataParams, GenerateParams, parse_params

TWIN = GenerateParams(identities=40, images_per_identity=3, render_size=32, workers=1, minority_share=0.3,
                      base_rate_majority=0.4, base_rate_minority=0.4, layout="folder")


@pytest.fixture(scope="module")
def twin(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("twin") / "twin"
    generate_folder_like(TWIN, root)
    return root


@pytest.fixture
def folder(twin, tmp_path) -> Path:
    """A private copy of the twin that a test may damage."""
    return Path(shutil.copytree(twin, tmp_path / "folder"))


def data(root: Path, **changes) -> DataParams:
    folder = {"identity_column": "identity", **changes.pop("folder", {})}
    return DataParams(**{"source": "folder", "root": str(root), "target": "Expression", "task": "multiclass",
                         "protected": ["gender"], "folder": folder, **changes})


def labels(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "labels.csv", dtype=str, keep_default_na=False)


def write_labels(root: Path, frame: pd.DataFrame) -> None:
    frame.to_csv(root / "labels.csv", index=False)


def split_by_identity(frame: pd.DataFrame) -> pd.Series:
    """A given split that keeps identities whole and puts both gender groups in every split."""
    number = frame["identity"].str.removeprefix("person_").astype(int)
    return pd.Series(np.array(["train", "train", "val", "test"])[number % 4], index=frame.index)


# --- reading ---------------------------------------------------------------------------------------------------

def test_the_twin_reads_as_a_three_way_target_with_every_split(twin):
    raw = load_dataset(data(twin))
    truth = labels(twin)
    assert raw.classes == ["frowning", "neutral", "smiling"]
    assert raw.synthetic
    assert list(raw.table.columns) == ["sample_id", "split", "y_true", "gender"]
    assert list(raw.table["sample_id"]) == list(truth["file"])
    assert [raw.classes[k] for k in raw.table["y_true"]] == list(truth["Expression"])
    assert list(raw.table["gender"]) == list(truth["gender"])
    assert [p.relative_to(twin.resolve()).as_posix() for p in raw.paths] == list(truth["file"])
    assert set(raw.table["split"]) == {"train", "val", "test"}


def test_a_parquet_table_reads_like_the_csv(folder):
    from_csv = load_dataset(data(folder))
    frame = labels(folder).astype({"identity": "category"})
    frame["Smiling"] = frame["Smiling"] == "1"  # a boolean column: its positive value is True
    frame.to_parquet(folder / "labels.parquet")
    (folder / "labels.csv").unlink()
    from_parquet = load_dataset(data(folder, folder={"table": "labels.parquet"}))
    pd.testing.assert_frame_equal(from_parquet.table, from_csv.table)
    binary = load_dataset(data(folder, task="binary", target="Smiling", folder={"table": "labels.parquet"}))
    assert list(binary.table["y_true"]) == list(frame["Smiling"].astype(int))


def test_a_binary_zero_one_target_needs_no_data_positive(twin):
    raw = load_dataset(data(twin, task="binary", target="Smiling"))
    assert raw.classes is None
    assert list(raw.table["y_true"]) == list(labels(twin)["Smiling"].astype(int))


def test_a_binary_target_from_named_values_uses_data_positive(twin):
    raw = load_dataset(data(twin, task="binary", positive=["smiling"]))
    assert list(raw.table["y_true"]) == list(labels(twin)["Smiling"].astype(int))
    assert "target 'Expression' is not binary; set data.positive" in refusal(twin, task="binary")


def test_a_given_split_column_is_used_as_it_is(folder):
    frame = labels(folder)
    frame["split"] = split_by_identity(frame)
    write_labels(folder, frame)
    raw = load_dataset(data(folder))
    assert list(raw.table["split"]) == list(frame["split"])


def test_class_as_group_loads(twin):
    raw = load_dataset(data(twin, protected=["Expression"]))
    assert sorted(raw.table["Expression"].unique()) == raw.classes
    assert (raw.table["Expression"].map(raw.classes.index) == raw.table["y_true"]).all()


# --- the drawn split ---------------------------------------------------------------------------------------------

def blank_folder(root: Path, frame: pd.DataFrame) -> Path:
    """Empty image files for a label table: the reader checks files exist and never decodes them."""
    (root / "images").mkdir(parents=True)
    for name in frame["file"]:
        (root / name).touch()
    write_labels(root, frame)
    return root


def random_table(n_identities: int, per_identity: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = n_identities * per_identity
    identity = np.repeat(np.arange(n_identities), per_identity)
    male = np.where((rng.random(n_identities) < 0.3)[identity], "Male", "Female")
    return pd.DataFrame({"file": [f"images/{i}.jpg" for i in range(n)],
                         "Expression": np.array(["smiling", "neutral", "frowning"])[rng.integers(0, 3, n)],
                         "gender": male, "identity": [f"p{i}" for i in identity]})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_drawn_split_never_splits_an_identity_and_keeps_the_shares(tmp_path, seed):
    root = blank_folder(tmp_path / "f", random_table(400, 4, seed))
    raw = load_dataset(data(root, seed=seed, val_share=0.1, folder={"test_share": 0.2}))
    table = raw.table.assign(identity=labels(root)["identity"])
    assert (table.groupby("identity")["split"].nunique() == 1).all()
    share = table.groupby("gender")["split"].value_counts(normalize=True)
    for male in ("Female", "Male"):
        assert share[male]["test"] == pytest.approx(0.2, abs=0.04)
        assert share[male]["val"] == pytest.approx(0.1, abs=0.04)


def test_without_identities_each_target_x_group_stratum_splits_to_within_one_row(tmp_path):
    frame = random_table(1000, 1)
    root = blank_folder(tmp_path / "f", frame)
    table = load_dataset(data(root, folder={"identity_column": None, "test_share": 0.25}, val_share=0.15)).table
    for _, part in table.groupby(["y_true", "gender"]):
        counts = part["split"].value_counts()
        assert abs(counts["test"] - 0.25 * len(part)) <= 1
        assert abs(counts["val"] - 0.15 * len(part)) <= 1


def test_the_drawn_split_is_seeded(twin):
    first, again = load_dataset(data(twin, seed=3)).table, load_dataset(data(twin, seed=3)).table
    other = load_dataset(data(twin, seed=4)).table
    assert list(first["split"]) == list(again["split"])
    assert list(first["split"]) != list(other["split"])


# --- refusals ----------------------------------------------------------------------------------------------------

def refusal(root: Path, **changes) -> str:
    with pytest.raises(FairquantError) as caught:
        load_folder(root, data(root, **changes))
    message = str(caught.value)
    assert "\n" not in message
    return message


def edit(root: Path, row: int, column: str, value: str) -> None:
    frame = labels(root)
    frame.loc[row, column] = value
    write_labels(root, frame)


def test_a_missing_table_is_refused(folder):
    assert refusal(folder, folder={"table": "nope.csv"}).startswith(f"{folder / 'nope.csv'}: missing (label table")


def test_a_missing_image_is_refused_with_its_line(folder):
    (folder / "images" / "000005.jpg").unlink()
    assert refusal(folder) == (f"{folder / 'labels.csv'}: line 6: file 'images/000005.jpg' is missing under {folder}; "
                               f"fix the path or drop the row")


def test_a_twice_listed_image_is_refused(folder):
    edit(folder, 9, "file", "images/000003.jpg")
    assert refusal(folder).endswith("line 11: file 'images/000003.jpg' is listed twice (first on line 4); list each "
                                    "image once")


def test_the_same_image_under_another_spelling_is_twice_listed(folder):
    edit(folder, 9, "file", "./images//000003.jpg")
    assert "line 11: file './images//000003.jpg' is listed twice (first on line 4)" in refusal(folder)


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside.jpg", "images/../../outside.jpg", "C:\\x.jpg",
                                  "images\\..\\..\\x.jpg"])
def test_a_path_leaving_the_root_is_refused(folder, path):
    edit(folder, 2, "file", path)
    assert refusal(folder) == (f"{folder / 'labels.csv'}: line 4: file {path!r} leaves the dataset root; give a path "
                               f"relative to data.root")


def test_a_symlink_out_of_the_root_is_refused(folder, tmp_path):
    outside = tmp_path / "outside.jpg"
    shutil.copy(folder / "images" / "000001.jpg", outside)
    (folder / "images" / "link.jpg").symlink_to(outside)
    edit(folder, 2, "file", "images/link.jpg")
    assert "line 4: file 'images/link.jpg' resolves outside the dataset root" in refusal(folder)


def test_a_symlink_inside_the_root_is_read(folder):
    (folder / "images" / "link.jpg").symlink_to(folder / "images" / "000003.jpg")
    edit(folder, 2, "file", "images/link.jpg")
    raw = load_folder(folder, data(folder))
    assert raw.paths[2] == (folder / "images" / "000003.jpg").resolve()


COLUMNS = "file, Expression, Smiling, gender, identity"


@pytest.mark.parametrize("changes, named", [
    ({"target": "Mood"}, "'Mood' (data.target)"),
    ({"protected": ["Race"]}, "'Race' (data.protected)"),
    ({"folder": {"file_column": "path"}}, "'path' (data.folder.file_column)"),
    ({"folder": {"identity_column": "person"}}, "'person' (data.folder.identity_column)"),
    ({"folder": {"split_column": "partition", "identity_column": "identity"}}, "'partition' (data.folder.split_column)"),
])
def test_an_unknown_column_is_refused_listing_the_tables(twin, changes, named):
    assert refusal(twin, **changes) == f"{twin / 'labels.csv'}: no column {named}; the table's columns: {COLUMNS}"


def test_an_empty_cell_is_refused_with_its_line(folder):
    edit(folder, 6, "gender", "")
    assert refusal(folder) == (f"{folder / 'labels.csv'}: line 8: empty 'gender' cell (1 in all); fill it or drop "
                               f"the row")


def test_a_null_parquet_cell_is_refused_with_its_row(folder):
    frame = labels(folder)
    frame.loc[6, "gender"] = None
    frame.to_parquet(folder / "labels.parquet")
    message = refusal(folder, folder={"table": "labels.parquet"})
    assert message == f"{folder / 'labels.parquet'}: row 7: empty 'gender' cell (1 in all); fill it or drop the row"


def test_an_empty_table_is_refused(folder):
    (folder / "labels.csv").write_text("file,Expression,Smiling,gender,identity\n")
    assert refusal(folder).endswith("labels.csv: the table has no rows; list one image per row")


def test_a_bad_split_value_is_refused(folder):
    frame = labels(folder)
    frame["split"] = split_by_identity(frame)
    frame.loc[4, "split"] = "validation"
    write_labels(folder, frame)
    assert refusal(folder).endswith("labels.csv: line 6: split 'validation' is not one of train, val, test")


def test_an_identity_in_two_given_splits_is_refused(folder):
    frame = labels(folder)
    frame["split"] = split_by_identity(frame)
    first = frame["identity"].iloc[0]
    other = "test" if frame.loc[0, "split"] != "test" else "train"
    frame.loc[1, "split"] = other
    write_labels(folder, frame)
    assert f"line 3: identity '{first}' is in the {other} split but also in {frame.loc[0, 'split']} (line 2)" in \
        refusal(folder)
    assert load_folder(folder, data(folder, folder={"identity_column": None})).table["split"].iloc[1] == other


def test_a_group_with_no_test_rows_is_refused(folder):
    frame = labels(folder)
    frame["split"] = split_by_identity(frame)
    frame.loc[(frame["gender"] == "Male") & (frame["split"] == "test"), "split"] = "train"
    write_labels(folder, frame)
    minority = int((frame["gender"] == "Male").sum())
    assert refusal(folder) == (f"{folder / 'labels.csv'}: protected group gender = Male has no test rows ({minority} rows "
                               f"in all); move some of its images to the test split")


def test_a_group_absent_from_val_is_read_as_celeba_allows_it(folder):
    """Found in review: the folder reader refused it, while CEAG's checks and the post-processors skip a group
    missing from val (and CelebA's reader reads it)."""
    frame = labels(folder)
    frame["split"] = split_by_identity(frame)
    male_val = (frame["gender"] == "Male") & (frame["split"] == "val")
    assert male_val.any()
    frame.loc[male_val, "split"] = "train"
    write_labels(folder, frame)
    table = load_folder(folder, data(folder)).table
    assert not ((table["gender"] == "Male") & (table["split"] == "val")).any()
    assert ((table["gender"] == "Male") & (table["split"] == "test")).any()


def test_a_group_too_small_for_the_drawn_split_is_refused(tmp_path):
    frame = random_table(40, 1)
    frame.loc[:, "gender"] = "Female"
    frame.loc[0, "gender"] = "Male"
    root = blank_folder(tmp_path / "f", frame)
    message = refusal(root, folder={"identity_column": None})
    assert "protected group gender = Male has no" in message and "give the table a split column" in message
    assert "try another data.seed" in message


@pytest.mark.parametrize("raw, message", [
    ({"data": {"source": "folder", "folder": {"table": "labels.txt"}}}, "name a .csv or .parquet file"),
    ({"data": {"source": "folder", "folder": {"tabel": "x.csv"}}}, "data.folder.tabel"),
    ({"generate": {"layout": "folder"}}, "generate.layout is folder but data.source is synthetic"),
    ({"generate": {"layout": "tree"}}, "generate.layout"),
])
def test_bad_folder_params_are_refused_on_load(raw, message):
    with pytest.raises(FairquantError, match=message.replace(".", r"\.")):
        parse_params(raw)


# --- the twin ----------------------------------------------------------------------------------------------------

def test_the_twin_draws_expressions_by_group_rate_and_mouth_curvature():
    params = TWIN.model_copy(update={"identities": 3000, "images_per_identity": 2, "minority_share": 0.5,
                                     "base_rate_majority": 0.6, "base_rate_minority": 0.2, "label_noise": 0.0,
                                     "rare_cue_share": 0.0})
    ident = _identities(params)
    drawn = _expression_labels(params, ident)
    male = ident["male"][drawn["identity"]]
    assert (drawn["label"][~male] == 0).mean() == pytest.approx(0.6, abs=0.03)
    assert (drawn["label"][male] == 0).mean() == pytest.approx(0.2, abs=0.03)
    assert (drawn["label"][male] == 1).mean() == pytest.approx(0.4, abs=0.03)
    curve = drawn["curve"]
    assert curve[drawn["label"] == 0].min() >= 0.2 and curve[drawn["label"] == 2].max() <= -0.2
    assert np.abs(curve[drawn["label"] == 1]).max() <= 0.2


def test_the_twin_is_deterministic_and_labelled_synthetic(twin, tmp_path):
    generate_folder_like(TWIN.model_copy(update={"workers": 2}), tmp_path / "again")
    assert (tmp_path / "again" / "labels.csv").read_bytes() == (twin / "labels.csv").read_bytes()
    assert (tmp_path / "again" / "images" / "000007.jpg").read_bytes() == (twin / "images" / "000007.jpg").read_bytes()
    assert "SYNTHETIC" in (twin / "SYNTHETIC.txt").read_text()
    frame = labels(twin)
    assert ((frame["Expression"] == "smiling") == (frame["Smiling"] == "1")).all()
    assert "split" not in frame.columns


# --- through the stages ------------------------------------------------------------------------------------------

FOLDER_STUDY = {"data.source": "folder", "data.target": "Expression", "data.task": "multiclass",
                "data.positive": None, "data.protected": ["gender"], "data.folder": {"identity_column": "identity"},
                "generate.layout": "folder", "prepare.image_size": 16,
                # binary remedies are refused on a multi-class target
                "mitigate.before_compression": [], "mitigate.during_prune": [], "mitigate.after": []}


def test_generate_then_prepare_a_multiclass_folder_study(tmp_path):
    params = {**FOLDER_STUDY, "generate.identities": 30, "generate.minority_share": 0.4,  # 12 minority identities
              "generate.images_per_identity": 2, "generate.render_size": 32, "generate.workers": 1,
              "data.root": str(tmp_path / "raw")}
    generated = run_stage("generate", ["--out", str(tmp_path / "raw")], tmp_path, params)
    assert generated.returncode == 0, generated.stderr
    assert (tmp_path / "raw" / "labels.csv").is_file()
    prepared = run_stage("prepare", ["--out", str(tmp_path / "prepared")], tmp_path, params)
    assert prepared.returncode == 0, prepared.stderr
    from fairquant.data.prepare import load_prepared

    table, images, info = load_prepared(tmp_path / "prepared")
    assert info["synthetic"] and info["task"] == "multiclass"
    assert info["classes"] == ["frowning", "neutral", "smiling"]
    assert images.shape == (60, 16, 16, 3) and len(table) == 60


def test_generate_skips_a_users_own_folder(tmp_path):
    result = run_stage("generate", ["--out", str(tmp_path / "raw")], tmp_path,
                       {**FOLDER_STUDY, "generate.layout": "celeba"})
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["README.txt"]


def test_prepare_refuses_a_bad_folder_with_one_line_and_no_output(folder, tmp_path):
    (folder / "images" / "000005.jpg").unlink()
    result = run_stage("prepare", ["--out", str(tmp_path / "prepared")], tmp_path,
                       {**FOLDER_STUDY, "data.root": str(folder)})
    assert_clean_failure(result, f"{folder / 'labels.csv'}: line 6: file 'images/000005.jpg' is missing", 
                         tmp_path / "prepared")


def test_an_unreadable_table_is_refused(folder):
    (folder / "labels.parquet").write_bytes(b"not parquet at all")
    message = refusal(folder, folder={"table": "labels.parquet"})
    assert message.startswith(f"{folder / 'labels.parquet'}: not a readable label table (")


def test_a_csv_with_a_byte_order_mark_reads(folder):
    text = (folder / "labels.csv").read_text()
    (folder / "labels.csv").write_text("\ufeff" + text, encoding="utf-8")
    assert len(load_folder(folder, data(folder)).table) == len(labels(folder))


def test_the_default_generator_output_does_not_mention_the_layout(tiny_celeba):
    """generate.layout is new; the default (CelebA) dataset's files, generator.json included, stay as they were."""
    from fairquant.io import read_json

    assert "layout" not in read_json(tiny_celeba / "generator.json")["params"]
    assert not (tiny_celeba / "labels.csv").exists()


def test_a_rare_class_always_gets_a_training_unit_in_the_drawn_split():
    """3 groups x (40 common + 1 rare image): some seeds once drew every rare image into val or test, and prepare
    then refused the class for having no training image."""
    from fairquant.data.folder import _drawn_split
    from fairquant.params import DataParams

    rows = [{"race": g, "target": t} for g in "ABC" for t in ["common"] * 40 + ["rare"]]
    frame = pd.DataFrame(rows)
    for seed in range(60):
        params = DataParams(source="folder", task="multiclass", target="target", protected=["race"], seed=seed)
        split = _drawn_split(frame, params)
        assert ((frame["target"] == "rare").to_numpy() & (split == "train")).any(), seed
