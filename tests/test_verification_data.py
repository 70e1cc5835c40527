"""Verification data: RFW and identity-folder readers on tiny fixtures in the exact on-disk formats, the prepared
folder, and the generated default."""

import hashlib
import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from fairquant.data.alignment import CANONICAL_EYES, align_face
from fairquant.data.identity_folders import read_identity_folders
from fairquant.data.prepare_verification import balanced_quotas, prepare_verification
from fairquant.data.rfw import read_landmarks, read_rfw
from fairquant.data.synthetic_verification import generate_verification_data
from fairquant.errors import FairquantError
from fairquant.params import VerifyDataParams, VerifyGenerateParams

IDS = ("m.0aa", "m.0bb", "m.0cc", "m.0dd")
UNPADDED = "m.0dd"  # its files are m.0dd_1.jpg ...: the zero-padding mismatch RFW's own examples show
GENUINE = [f"{i}\t{a}\t{b}" for i in IDS for a, b in combinations((1, 2, 3), 2)]  # m.0aa 1 2, m.0aa 1 3, ...
IMPOSTOR = [f"{i}\t{a}\t{j}\t{b}" for i, j in combinations(IDS, 2) for a in (1, 2, 3) for b in (1, 2, 3)]


def _jpg(path: Path, colour=(120, 90, 70), size=(48, 40)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _file_name(identity: str, number: int) -> str:
    return f"{identity}_{number}.jpg" if identity == UNPADDED else f"{identity}_{number:04d}.jpg"


def _fold_lines() -> list[str]:
    """10 folds of one genuine then one impostor line, in RFW's tab-separated format."""
    return [line for fold in range(10) for line in (GENUINE[fold], IMPOSTOR[fold])]


def make_rfw(root: Path, races=("African", "Asian"), lines=None, landmarks: dict | None = None) -> Path:
    """test/data/<Race>/<id>/<id>_000N.jpg (3 images each) and test/txts/<Race>/<Race>_pairs.txt."""
    for race in races:
        for identity in IDS:
            for n in (1, 2, 3):
                _jpg(root / "test" / "data" / race / identity / _file_name(identity, n), (40 * n, 90, 70))
        txts = root / "test" / "txts" / race
        txts.mkdir(parents=True, exist_ok=True)
        (txts / f"{race}_pairs.txt").write_text("\n".join(lines or _fold_lines()) + "\n")
        if landmarks and race in landmarks:
            (txts / f"{race}_lmk.txt").write_text(landmarks[race])
    return root


def _lmk_line(race: str, identity: str, n: int, eyes=((14.0, 16.0), (30.0, 16.0))) -> str:
    (x1, y1), (x2, y2) = eyes
    return (f"/test/data/{race}/{identity}/{identity}_{n:04d}.jpg\t{IDS.index(identity)}\t"
            f"{x1}\t{y1}\t{x2}\t{y2}\t22.0\t24.0\t16.0\t30.0\t28.0\t30.0\n")


def _all_landmarks(race: str) -> str:
    return "".join(_lmk_line(race, identity, n) for identity in IDS for n in (1, 2, 3))


def make_training(root: Path, races=("African", "Caucasian"), per_identity=(3, 2, 1)) -> Path:
    """BUPT layout: <root>/<Race>/<identity>/*.jpg; identity k of each race has per_identity[k] images."""
    for race in races:
        for k, count in enumerate(per_identity):
            for n in range(1, count + 1):
                _jpg(root / race / f"{race[:2]}{k}" / f"{race[:2]}{k}_{n:04d}.jpg", (30 * k, 60, 90))
    return root


# --- RFW reader ------------------------------------------------------------------------------------------------


def test_rfw_round_trip_folds_flags_and_rows(tmp_path):
    root = make_rfw(tmp_path / "rfw")
    test = read_rfw(root, ["African", "Asian"])
    pairs, images = test.pairs, test.images
    assert len(pairs) == 40 and list(pairs.columns) == ["pair_id", "race", "fold", "genuine", "row1", "row2", "line"]
    african = pairs[pairs["race"] == "African"]
    assert african["fold"].tolist() == [line // 2 for line in range(20)]
    assert african["genuine"].tolist() == [True, False] * 10
    assert african["pair_id"].iloc[3] == "African-0003" and african["line"].iloc[3] == 3
    first = african.iloc[0]  # m.0aa 1 2
    assert images.loc[first["row1"], "path"] == "test/data/African/m.0aa/m.0aa_0001.jpg"
    assert images.loc[first["row2"], "path"] == "test/data/African/m.0aa/m.0aa_0002.jpg"
    unpadded = pairs[pairs["pair_id"] == "African-0018"].iloc[0]  # 10th genuine line: m.0dd 1 2
    assert images.loc[unpadded["row1"], "path"] == "test/data/African/m.0dd/m.0dd_1.jpg"
    assert images["row"].tolist() == list(range(len(images)))
    assert not images.duplicated(["race", "path"]).any()
    assert set(images["alignment"]) == {"centre-crop"} and test.landmark_files == {"African": None, "Asian": None}


def test_folds_generalise_to_any_multiple_of_ten(tmp_path):
    lines = [line for fold in range(10) for line in (GENUINE[fold], IMPOSTOR[2 * fold], IMPOSTOR[2 * fold + 1])]
    root = make_rfw(tmp_path / "rfw", races=("Indian",), lines=lines)
    pairs = read_rfw(root, ["Indian"]).pairs
    assert pairs["fold"].tolist() == [line // 3 for line in range(30)]
    assert pairs["genuine"].tolist() == [True, False, False] * 10


def test_landmarks_align_and_the_choice_is_recorded(tmp_path):
    root = make_rfw(tmp_path / "rfw", landmarks={"African": _all_landmarks("African")})
    test = read_rfw(root, ["African", "Asian"])
    alignment = test.images.groupby("race")["alignment"].unique().to_dict()
    assert list(alignment["African"]) == ["landmarks"] and list(alignment["Asian"]) == ["centre-crop"]
    assert test.landmark_files["African"] == "test/txts/African/African_lmk.txt"
    assert test.eyes[0] == ((14.0, 16.0), (30.0, 16.0))
    assert read_landmarks(root / "test/txts/African/African_lmk.txt", "African")[("m.0dd", 2)].shape == (5, 2)


def test_alignment_puts_the_eyes_on_the_template():
    image = Image.new("RGB", (200, 160), (200, 200, 200))
    draw = ImageDraw.Draw(image)
    eyes = ((70.0, 90.0), (118.0, 70.0))  # tilted and off-centre
    for x, y in eyes:
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=(0, 0, 0))
    face = align_face(image, 56, eyes).mean(axis=2)
    for x, y in CANONICAL_EYES:
        assert face[int(y * 56), int(x * 56)] < 60  # dark: an eye landed there
    assert face[5, 5] > 150
    centre = align_face(image, 56, None)
    assert centre.shape == (56, 56, 3)


# --- training identity folders ------------------------------------------------------------------------------------


def test_bupt_layout_reads_races_filters_and_caps(tmp_path):
    root = make_training(tmp_path / "race_per_7000", races=("African", "Asian", "Caucasian"))
    table, info = read_identity_folders(root, races=["African", "Caucasian", "Indian"], min_images_per_identity=2)
    assert info["layout"] == "race folders" and set(table["race"]) == {"African", "Caucasian"}
    assert sorted(table["identity_name"].unique()) == ["Af0", "Af1", "Ca0", "Ca1"]  # the 1-image identities dropped
    assert table["identity"].tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
    assert table["path"].iloc[0] == "African/Af0/Af0_0001.jpg" and table["row"].tolist() == list(range(10))
    assert info["per_race"] == {"African": {"identities": 2, "images": 5}, "Caucasian": {"identities": 2, "images": 5}}
    capped, capped_info = read_identity_folders(root, races=["African", "Caucasian"], max_identities=3, seed=1)
    again, _ = read_identity_folders(root, races=["African", "Caucasian"], max_identities=3, seed=1)
    assert capped["identity_name"].nunique() == 3 and capped_info["dropped_identities_over_cap"] == 3
    pd.testing.assert_frame_equal(capped, again)
    assert sorted(capped["identity"].unique()) == [0, 1, 2]


def test_plain_identity_folders_have_unknown_race(tmp_path):
    root = tmp_path / "ms1m"
    for identity in ("0", "1", "17"):
        for n in (1, 2):
            _jpg(root / identity / f"{n}.jpg")
    table, info = read_identity_folders(root, races=["African", "Asian"])
    assert info["layout"] == "identity folders" and set(table["race"]) == {"unknown"}
    assert info["races_filter"].startswith("not applied") and table["identity_name"].nunique() == 3


def test_balanced_quotas_are_as_equal_as_availability_allows():
    rng = np.random.default_rng(0)
    assert balanced_quotas({"African": 2, "Asian": 50, "Caucasian": 50}, 20, rng) == \
        {"African": 2, "Asian": 9, "Caucasian": 9}
    quotas = balanced_quotas({"African": 9, "Asian": 9, "Caucasian": 9}, 10, rng)
    assert sorted(quotas.values()) == [3, 3, 4]


# --- errors: each names the file (and line) and the fix ------------------------------------------------------------


def _pairs_error(tmp_path, lines, race="African") -> str:
    root = make_rfw(tmp_path / "rfw", races=(race,), lines=lines)
    with pytest.raises(FairquantError) as error:
        read_rfw(root, [race])
    return str(error.value)


def _with_line(index: int, text: str) -> list[str]:
    lines = _fold_lines()
    lines[index] = text
    return lines


@pytest.mark.parametrize(("index", "text", "expected"), [
    (4, "m.0aa\t1", "African_pairs.txt:5: expected 3 tab-separated fields"),
    (5, "m.0aa\t1\tm.0bb\t1\t7", "African_pairs.txt:6: expected 3 tab-separated fields"),
    (2, "m.0zz\t1\t2", "African_pairs.txt:3: identity folder"),
    (2, "m.0aa\t1\t9", "African_pairs.txt:3: image 9 of 'm.0aa' is not in"),
    (2, "m.0aa\tone\t2", "African_pairs.txt:3: image number 'one' is not a non-negative integer"),
    (2, "m.0aa\t-1\t2", "African_pairs.txt:3: image number '-1'"),
    (3, "..\t1\tm.0bb\t1", "African_pairs.txt:4: identity '..' is not a plain folder name"),
    (3, "../Asian/m.0aa\t1\tm.0bb\t1", "African_pairs.txt:4: identity '../Asian/m.0aa' is not a plain folder name"),
    (3, "/etc\t1\tm.0bb\t1", "African_pairs.txt:4: identity '/etc' is not a plain folder name"),
    (3, "m.0aa\t1\tm.0aa\t2", "African_pairs.txt:4: impostor line names identity 'm.0aa' twice"),
    (2, "m.0aa\t2\t2", "African_pairs.txt:3: pairs image 2 of 'm.0aa' with itself"),
    (2, "m.0aa\t2\t1", "African_pairs.txt: lines 1 and 3 are the same pair of images"),
    (3, "m.0aa\t1\tm.0bb\t01", "African_pairs.txt: lines 2 and 4 are the same pair of images"),
])
def test_bad_pairs_lines_name_file_and_line(tmp_path, index, text, expected):
    message = _pairs_error(tmp_path, _with_line(index, text))
    assert expected in message
    assert "\n" not in message


def test_swapped_impostor_is_a_duplicate(tmp_path):
    lines = _fold_lines()
    lines[3] = "m.0bb\t1\tm.0aa\t1"  # line 2 is m.0aa 1 m.0bb 1
    assert "lines 2 and 4 are the same pair of images; remove one" in _pairs_error(tmp_path, lines)


@pytest.mark.parametrize(("count", "expected"), [
    (9, "9 pairs lines make fewer than 10 folds"),
    (0, "0 pairs lines make fewer than 10 folds"),
    (18, "18 lines do not split into 10 equal folds"),
])
def test_fold_count_errors(tmp_path, count, expected):
    message = _pairs_error(tmp_path, _fold_lines()[:count] or [""])
    assert "African_pairs.txt" in message and expected in message


def test_a_fold_without_impostors_is_refused(tmp_path):
    lines = _fold_lines()
    lines[7] = "m.0dd\t1\t3"
    assert "African_pairs.txt: fold 3 (lines 7-8) has no impostor pairs" in _pairs_error(tmp_path, lines)


def test_missing_folders_and_pairs_files(tmp_path):
    with pytest.raises(FairquantError, match="nowhere does not exist; set verify.data.rfw_root"):
        read_rfw(tmp_path / "nowhere")
    root = make_rfw(tmp_path / "rfw", races=("African", "Asian"))
    (root / "test/txts/Asian/Asian_pairs.txt").unlink()
    with pytest.raises(FairquantError, match=r"test/data/Asian holds Asian test images but .*Asian_pairs.txt is miss"):
        read_rfw(root, ["African", "Asian"])
    with pytest.raises(FairquantError, match="race Indian is listed in verify.data.races but .* has neither"):
        read_rfw(root, ["African", "Indian"])
    with pytest.raises(FairquantError, match="nothing does not exist; set verify.data.train_root"):
        read_identity_folders(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FairquantError, match="empty has no identity folders"):
        read_identity_folders(tmp_path / "empty")
    (tmp_path / "empty" / "African" / "a").mkdir(parents=True)
    with pytest.raises(FairquantError, match="empty holds no jpg/jpeg/png images"):
        read_identity_folders(tmp_path / "empty")
    (tmp_path / "mixed" / "African").mkdir(parents=True)
    (tmp_path / "mixed" / "m.0aa").mkdir()
    with pytest.raises(FairquantError, match=r"mixes race folders \(African\) with other folders \(m.0aa\)"):
        read_identity_folders(tmp_path / "mixed")
    root = make_training(tmp_path / "few", per_identity=(1, 1))
    with pytest.raises(FairquantError, match="no training identity in .* has 2 images or more"):
        read_identity_folders(root, min_images_per_identity=2)


@pytest.mark.parametrize(("line", "expected"), [
    ("/test/data/African/../../../etc/m.0aa_0001.jpg\t0" + "\t1" * 10, "African_lmk.txt:2: image path"),
    ("/home/me/test/data/African/m.0aa/m.0aa_0001.jpg\t0" + "\t1" * 10, "is not inside the dataset"),
    ("/African/m.0aa/m.0aa_0001.jpg\t0" + "\t1" * 10, "is not inside the dataset"),
    ("/test/data/Asian/m.0aa/m.0aa_0001.jpg\t0" + "\t1" * 10, "is in race folder 'Asian', not African"),
    ("/test/data/African/m.0aa/m.0aa_0001.jpg\t0\t1\t2", "African_lmk.txt:2: expected an image path then 10"),
    ("/test/data/African/m.0aa/m.0aa_0001.jpg\t0" + "\tx" * 10, "the last 10 fields must be numbers"),
    ("/test/data/African/m.0aa/m.0aa_0001.jpg\t0" + "\t5" * 10, "are not two distinct points"),
    (_lmk_line("African", "m.0aa", 2).strip(), "lines 1 and 2 both give landmarks for image 2"),
])
def test_bad_landmark_lines_name_file_and_line(tmp_path, line, expected):
    text = _lmk_line("African", "m.0aa", 2) + line + "\n"
    root = make_rfw(tmp_path / "rfw", races=("African",), landmarks={"African": text})
    with pytest.raises(FairquantError) as error:
        read_rfw(root, ["African"])
    assert expected in str(error.value) and "African_lmk.txt" in str(error.value)


def test_landmark_paths_in_any_accepted_form(tmp_path):
    path = tmp_path / "African_lmk.txt"
    path.write_text("test/data/African/m.0aa/m.0aa_1.jpg 0 3 3 9 3 5 8 4 9 6 9\n"  # no leading slash, spaces
                    "African/m.0bb/m.0bb_0002.jpg\t3\t3\t9\t3\t5\t8\t4\t9\t6\t9\n")  # no label field
    points = read_landmarks(path, "African")
    assert set(points) == {("m.0aa", 1), ("m.0bb", 2)}
    assert points[("m.0aa", 1)].tolist() == [[3, 3], [9, 3], [5, 8], [4, 9], [6, 9]]


def test_two_files_with_one_image_number_are_refused(tmp_path):
    root = make_rfw(tmp_path / "rfw", races=("African",))
    _jpg(root / "test/data/African/m.0aa/m.0aa_1.jpg")
    with pytest.raises(FairquantError, match=r"files m.0aa_0001.jpg and m.0aa_1.jpg both have image number 1"):
        read_rfw(root, ["African"])


# --- the prepared folder -----------------------------------------------------------------------------------------


def _data_params(tmp_path: Path, **kw) -> VerifyDataParams:
    make_rfw(tmp_path / "raw" / "rfw", races=("African", "Caucasian"),
             landmarks={"African": _all_landmarks("African")})
    make_training(tmp_path / "raw" / "race_per_7000", races=("African", "Caucasian"), per_identity=(4, 3, 2))
    for k in range(5):
        _jpg(tmp_path / "raw" / "faces" / f"{k}.{'png' if k % 2 else 'jpg'}", (20 * k, 100, 100))
    (tmp_path / "raw" / "SYNTHETIC.txt").write_text("generated\n")
    values = {"train_root": str(tmp_path / "raw/race_per_7000"), "rfw_root": str(tmp_path / "raw/rfw"),
              "synthetic_folder": str(tmp_path / "raw/faces"), "races": ["African", "Caucasian"], "image_size": 16,
              "calibration_size": 7, "workers": 1, **kw}
    return VerifyDataParams(**values)


def test_prepare_writes_every_output(tmp_path):
    from fairquant.compress.calibration import load_set

    data = _data_params(tmp_path)
    out = tmp_path / "prepared"
    info = prepare_verification(data, out)
    train = pd.read_parquet(out / "train.parquet")
    test = pd.read_parquet(out / "test.parquet")
    pairs = pd.read_parquet(out / "pairs.parquet")
    assert np.load(out / "train_images.npy").shape == (18, 16, 16, 3) and len(train) == 18
    assert np.load(out / "test_images.npy").shape == (len(test), 16, 16, 3)
    assert list(test.columns) == ["row", "path", "race", "identity_name", "alignment"]
    assert pairs["row1"].max() < len(test) and len(pairs) == 40 and pairs["fold"].max() == 9
    per_race = test["race"].value_counts().to_dict()  # the 11 images the pairs name
    assert info["synthetic"] is True and info["test"]["alignment"] == {
        "African": {"landmarks": per_race["African"], "centre-crop": 0},
        "Caucasian": {"landmarks": 0, "centre-crop": per_race["Caucasian"]}}
    assert f"Caucasian test images: {per_race['Caucasian']} centre-cropped (no landmarks file)" in info["summary"]
    assert info["pairs"]["African"] == {"pairs": 20, "genuine": 10, "impostor": 10, "folds": 10}
    assert info["train"]["per_race"]["African"] == {"identities": 3, "images": 9}
    for name, size in (("train", 7), ("balanced", 7), ("synthetic", 5)):
        images, set_info = load_set(out / "calibration" / name, None, "test")
        assert images.shape == (size, 16, 16, 3) and set_info["set"] == name and set_info["size"] == size
    balanced = json.loads((out / "calibration/balanced/info.json").read_text())
    assert sorted(balanced["per_race"].values()) == [3, 4]
    subset, _ = load_set(out / "calibration" / "balanced", 4, "test")
    assert len(subset) == 4
    assert json.loads((out / "info.json").read_text())["calibration"]["train"]["size"] == 7


def test_prepare_on_identity_folders_skips_the_balanced_set(tmp_path):
    data = _data_params(tmp_path)
    plain = tmp_path / "plain"
    for identity in ("a", "b", "c"):
        for n in range(3):
            _jpg(plain / identity / f"{n}.jpg")
    info = prepare_verification(data.model_copy(update={"train_root": str(plain)}), tmp_path / "out")
    assert "skipped" in info["calibration"]["balanced"] and not (tmp_path / "out/calibration/balanced").exists()
    assert any("balanced calibration set skipped" in line for line in info["summary"])


def test_prepare_failure_leaves_no_partial_output(tmp_path):
    data = _data_params(tmp_path)
    out = tmp_path / "prepared"
    (tmp_path / "raw/rfw/test/data/Caucasian/m.0bb/m.0bb_0002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(FairquantError, match=r"m.0bb_0002.jpg: cannot be decoded as an image"):
        prepare_verification(data, out)
    assert not out.exists() and not list(tmp_path.glob(".prepared*"))
    out.mkdir()
    (out / "old.txt").write_text("previous run")
    with pytest.raises(FairquantError):
        prepare_verification(data, out)
    assert [p.name for p in out.iterdir()] == ["old.txt"]


@pytest.mark.parametrize(("update", "expected"), [
    ({"synthetic_folder": "missing-faces"}, "missing-faces does not exist; set verify.data.synthetic_folder"),
    ({"calibration_size": 50}, "verify.data.calibration_size=50 is larger than the training set (18 images)"),
])
def test_prepare_input_errors(tmp_path, update, expected):
    data = _data_params(tmp_path).model_copy(update=update)
    with pytest.raises(FairquantError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        prepare_verification(data, tmp_path / "prepared")
    assert not (tmp_path / "prepared").exists()


def test_empty_synthetic_folder_is_refused(tmp_path):
    data = _data_params(tmp_path)
    (tmp_path / "no-faces").mkdir()
    (tmp_path / "no-faces" / "notes.txt").write_text("no images")
    with pytest.raises(FairquantError, match="no-faces has no jpg/jpeg/png files"):
        prepare_verification(data.model_copy(update={"synthetic_folder": str(tmp_path / "no-faces")}),
                             tmp_path / "prepared")


# --- the generated default ---------------------------------------------------------------------------------------

TINY = {"train_identities": 8, "images_per_identity": 2, "test_identities_per_race": 4,
        "test_images_per_identity": 4, "pairs_per_fold": 2, "render_size": 32, "faces": 10, "workers": 1}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify") / "synthetic_verify"
    summary = generate_verification_data(VerifyGenerateParams(**TINY), root)
    return root, summary


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_generator_is_deterministic_across_runs_and_workers(generated, tmp_path):
    root, _ = generated
    generate_verification_data(VerifyGenerateParams(**{**TINY, "workers": 2, "faces": 300}), tmp_path / "w2")
    generate_verification_data(VerifyGenerateParams(**{**TINY, "faces": 300}), tmp_path / "w1")
    assert _digest(tmp_path / "w1") == _digest(tmp_path / "w2")
    again = tmp_path / "again"
    generate_verification_data(VerifyGenerateParams(**TINY), again)
    assert _digest(again) == _digest(root)
    other = tmp_path / "other"
    generate_verification_data(VerifyGenerateParams(**{**TINY, "seed": 1}), other)
    assert _digest(other) != _digest(root)


def test_parallel_decoding_gives_the_same_store(tmp_path):
    root = tmp_path / "raw"
    generate_verification_data(VerifyGenerateParams(**{**TINY, "faces": 300}), root)
    stores = []
    for workers in (1, 2):
        data = VerifyDataParams(train_root=str(root / "race_per_7000"), rfw_root=str(root / "rfw"),
                                synthetic_folder=str(root / "faces"), image_size=16, calibration_size=8,
                                workers=workers)
        prepare_verification(data, tmp_path / f"w{workers}")
        stores.append((tmp_path / f"w{workers}" / "calibration/synthetic/images.npy").read_bytes())
    assert stores[0] == stores[1] and np.load(tmp_path / "w2/calibration/synthetic/images.npy").shape[0] == 300


def test_generator_writes_the_real_layouts(generated):
    root, summary = generated
    assert "SYNTHETIC DATA" in (root / "SYNTHETIC.txt").read_text()
    counts = {race: v["identities"] for race, v in summary["train"].items()}
    assert counts == {"African": 1, "Asian": 1, "Caucasian": 5, "Indian": 1}  # train_mix 0.1/0.2/0.6/0.1 of 8
    train, info = read_identity_folders(root / "race_per_7000")
    assert info["layout"] == "race folders" and len(train) == 16 and train["identity_name"].nunique() == 8
    test = read_rfw(root / "rfw")
    assert len(test.pairs) == 4 * 40 and set(test.images["alignment"]) == {"landmarks"}
    for race, part in test.pairs.groupby("race"):
        assert part["genuine"].tolist() == ([True] * 2 + [False] * 2) * 10
        assert part["fold"].tolist() == [line // 4 for line in range(40)]
    lines = (root / "rfw/test/txts/Asian/Asian_pairs.txt").read_text().splitlines()
    assert len(lines[0].split("\t")) == 3 and len(lines[2].split("\t")) == 4
    lmk = (root / "rfw/test/txts/Asian/Asian_lmk.txt").read_text().splitlines()
    assert len(lmk) == 16 and lmk[0].startswith("/test/data/Asian/") and len(lmk[0].split("\t")) == 12
    people = (root / "rfw/test/txts/Asian/Asian_people.txt").read_text().splitlines()
    assert len(people) == 4 and people[0].endswith("\t4")
    assert set(train["identity_name"]).isdisjoint(test.images["identity_name"])


def test_generated_landmarks_mark_the_eyes(generated):
    root, _ = generated
    line = (root / "rfw/test/txts/African/African_lmk.txt").read_text().splitlines()[0].split("\t")
    xy = np.array(line[2:], dtype=float).reshape(5, 2)
    assert xy[0, 0] < xy[1, 0] and abs(xy[0, 1] - xy[1, 1]) < 6  # left eye, right eye, roughly level
    assert xy[2, 1] > xy[0, 1] and xy[3, 1] > xy[2, 1]  # nose below the eyes, mouth below the nose
    image = Image.open(root / "rfw" / line[0].lstrip("/"))
    assert image.size == (32, 32) and (0 < xy).all() and (xy < 32).all()


def test_generated_faces_folder_has_the_manifest(generated):
    root, _ = generated
    manifest = json.loads((root / "faces/manifest.json").read_text())
    assert manifest["images"] == 10 and sum(manifest["race_counts"].values()) == 10
    assert manifest["race_counts"] == {"African": 1, "Asian": 2, "Caucasian": 6, "Indian": 1}
    assert len(list((root / "faces").glob("*.jpg"))) == 10


def test_prepare_reads_the_generated_default(generated, tmp_path):
    root, _ = generated
    data = VerifyDataParams(train_root=str(root / "race_per_7000"), rfw_root=str(root / "rfw"),
                            synthetic_folder=str(root / "faces"), image_size=16, calibration_size=8, workers=1)
    info = prepare_verification(data, tmp_path / "prepared")
    assert info["synthetic"] is True and info["train_test_identity_overlap"]["identities"] == 0
    assert info["test"]["images"] <= 64 and info["test"]["alignment"] == {
        race: {"landmarks": n, "centre-crop": 0} for race, n in info["test"]["per_race"].items()}
    assert info["calibration"]["synthetic"]["size"] == 10


def test_generator_refuses_more_pairs_than_identities_allow(tmp_path):
    params = VerifyGenerateParams(**{**TINY, "test_images_per_identity": 2, "pairs_per_fold": 2})
    with pytest.raises(FairquantError, match="pairs_per_fold=2 needs 20 distinct genuine and 20 impostor pairs"):
        generate_verification_data(params, tmp_path / "g")
    assert not (tmp_path / "g").exists()


def test_a_file_missing_a_fold_is_refused_even_when_its_lines_split_into_ten(tmp_path):
    """Found in review: 9 RFW-style folds of 5 genuine + 5 impostor lines (90 lines) split into ten 9-line "folds"
    that straddle the real ones, and were accepted."""
    from fairquant.data.rfw import read_pairs_file

    lines = []
    for fold in range(9):
        lines += [f"g{fold}_{k}\t1\t2" for k in range(5)]
        lines += [f"a{fold}_{k}\t1\tb{fold}_{k}\t1" for k in range(5)]
    path = tmp_path / "African_pairs.txt"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(FairquantError, match=r"is not 4 genuine lines then 5 impostor lines.*missing or cut fold"):
        read_pairs_file(path)
    ten = lines + [f"g9_{k}\t1\t2" for k in range(5)] + [f"a9_{k}\t1\tb9_{k}\t1" for k in range(5)]
    path.write_text("\n".join(ten) + "\n")
    assert len(read_pairs_file(path)) == 100


@pytest.mark.parametrize("folder", ["raw", "raw/rfw/test/data/African", "raw/race_per_7000"])
def test_a_synthetic_folder_overlapping_the_datasets_is_refused(tmp_path, folder):
    """Found in review: the dataset's parent folder as synthetic_folder put RFW test images into calibration."""
    data = _data_params(tmp_path).model_copy(update={"synthetic_folder": str(tmp_path / folder)})
    with pytest.raises(FairquantError, match=r"verify.data.synthetic_folder .* overlaps verify.data.(rfw|train)_root"):
        prepare_verification(data, tmp_path / "prepared")
    assert not (tmp_path / "prepared").exists()
