"""Multi-class targets from every known reader, on tiny fixtures written in each dataset's real on-disk format.

CIFAR-100 is written as the University of Toronto ships ``cifar-100-python/``: Python 2 cPickle files (protocol 2,
``str`` as BINSTRING, numpy under ``numpy.core.multiarray``) holding ``data`` (N x 3072 uint8, R then G then B
planes), ``fine_labels``, ``coarse_labels``, ``filenames``, ``batch_label``; ``meta`` holds ``fine_label_names``
and ``coarse_label_names``. torchvision's ``CIFAR100`` reads them with ``pickle.load(f, encoding="latin1")``.
"""

import gzip
import io
import pickle
import struct

import numpy as np
import pandas as pd
import pytest
from test_data import _jpeg, _write_idx
from test_stages import assert_clean_failure, run_stage

from fairquant.data.loaders import CIFAR10_CLASSES, FASHION_CLASSES, MNIST_CLASSES, load_dataset
from fairquant.data.utkface import UTK_RACES
from fairquant.data.prepare import check_splits, label_counts
from fairquant.errors import FairquantError
from fairquant.params import DataParams, parse_params

CIFAR100_FINE = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can castle "
    "caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin elephant "
    "flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man "
    "maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree "
    "plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper "
    "snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor train "
    "trout tulip turtle wardrobe whale willow_tree wolf woman worm").split()
CIFAR100_COARSE = (
    "aquatic_mammals fish flowers food_containers fruit_and_vegetables household_electrical_devices "
    "household_furniture insects large_carnivores large_man-made_outdoor_things large_natural_outdoor_scenes "
    "large_omnivores_and_herbivores medium_mammals non-insect_invertebrates people reptiles small_mammals trees "
    "vehicles_1 vehicles_2").split()
COARSE_OF_FINE = np.random.default_rng(3).permutation(np.repeat(np.arange(20), 5))  # 5 fine classes per superclass


class _Python2Pickler(pickle._Pickler):
    """Pickles as Python 2's cPickle wrote the CIFAR files: str as BINSTRING, numpy under numpy.core."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_python2_str(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        short = len(raw) < 256
        self.write((pickle.SHORT_BINSTRING + bytes([len(raw)])) if short else
                   (pickle.BINSTRING + struct.pack("<i", len(raw))))
        self.write(raw)
        self.memoize(obj)

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)

    dispatch[str] = save_python2_str
    dispatch[bytes] = save_python2_str
    dispatch[type] = save_global


def python2_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def _cifar_pixels(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """N x 3072 rows (R, G, B planes of 32 x 32): R holds ``first``, G ``second``, B the row number."""
    n = len(first)
    planes = [np.repeat(first[:, None], 1024, 1), np.repeat(second[:, None], 1024, 1),
              np.repeat((np.arange(n) % 256)[:, None], 1024, 1)]
    return np.concatenate(planes, axis=1).astype(np.uint8)


def cifar100_batch(fine: np.ndarray, name: str) -> dict:
    coarse = COARSE_OF_FINE[fine]
    return {"filenames": [f"{CIFAR100_FINE[f]}_s_{i:06d}.png" for i, f in enumerate(fine)],
            "batch_label": f"{name} batch 1 of 1", "fine_labels": [int(f) for f in fine],
            "coarse_labels": [int(c) for c in coarse], "data": _cifar_pixels(fine, coarse)}


def write_cifar100(root, per_class_train=5, per_class_test=1, dumps=python2_pickle):
    """``root/cifar-100-python/{train,test,meta}`` with every fine class ``per_class_*`` times, shuffled."""
    assert len(CIFAR100_FINE) == 100 and len(CIFAR100_COARSE) == 20  # the fixture's own sanity, not a test
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, per_class in (("train", per_class_train), ("test", per_class_test)):
        fine = rng.permutation(np.repeat(np.arange(100), per_class))
        (folder / name).write_bytes(dumps(cifar100_batch(fine, {"train": "training", "test": "testing"}[name])))
    (folder / "meta").write_bytes(dumps({"fine_label_names": CIFAR100_FINE, "coarse_label_names": CIFAR100_COARSE}))
    return folder


MULTICLASS_STAGE = {"data.task": "multiclass", "mitigate.before_compression": [], "mitigate.after": []}  # binary remedies off


def multiclass(source, root, **extra):
    return DataParams(source=source, root=str(root), target=extra.pop("target", "class"), task="multiclass",
                      protected=extra.pop("protected", ["class"]), **extra)


# --- CIFAR-100 ----------------------------------------------------------------------------------------

def test_cifar100_fine_classes_in_the_datasets_order_and_class_as_group(tmp_path):
    write_cifar100(tmp_path)
    raw = load_dataset(multiclass("cifar100", tmp_path))
    assert raw.classes == CIFAR100_FINE
    table = raw.table
    assert table["y_true"].dtype == np.int16 and len(table) == 600 and (table["split"] == "test").sum() == 100
    assert np.array_equal(raw.arrays[:, 5, 7, 0], table["y_true"].to_numpy())  # the R plane carries the fine label
    assert (table["class"] == np.array(CIFAR100_FINE)[table["y_true"]]).all()  # the group is the class's name
    assert raw.arrays.shape == (600, 32, 32, 3)
    check_splits(table, ["class"], raw.classes)  # every class has training images


def test_cifar100_coarse_labels_are_the_superclasses(tmp_path):
    write_cifar100(tmp_path)
    raw = load_dataset(multiclass("cifar100", tmp_path, cifar100_labels="coarse"))
    assert raw.classes == CIFAR100_COARSE
    assert np.array_equal(raw.arrays[:, 0, 0, 1], raw.table["y_true"].to_numpy())  # G plane: the coarse label
    fine = raw.arrays[:, 0, 0, 0]
    assert np.array_equal(COARSE_OF_FINE[fine], raw.table["y_true"].to_numpy())


def test_cifar100_repickled_by_python3_with_bytes_keys_reads_the_same(tmp_path):
    def bytes_keys(obj):
        convert = {str: lambda v: v.encode("latin1"), list: lambda v: [bytes_keys(x) for x in v]}
        if isinstance(obj, dict):
            return {k.encode(): bytes_keys(v) for k, v in obj.items()}
        return convert.get(type(obj), lambda v: v)(obj)

    write_cifar100(tmp_path / "a")
    write_cifar100(tmp_path / "b", dumps=lambda obj: pickle.dumps(bytes_keys(obj)))
    a, b = (load_dataset(multiclass("cifar100", tmp_path / name)) for name in "ab")
    assert b.classes == CIFAR100_FINE and pd.DataFrame.equals(a.table, b.table)
    assert np.array_equal(a.arrays, b.arrays)


def _damage(folder, damage):
    if damage == "missing meta":
        (folder / "meta").unlink()
    elif damage == "wrong label key":
        batch = cifar100_batch(np.arange(100), "training")
        batch["labels"] = batch.pop("fine_labels")
        (folder / "train").write_bytes(python2_pickle(batch))
    elif damage == "label out of range":
        (folder / "test").write_bytes(python2_pickle({**cifar100_batch(np.arange(100), "testing"),
                                                     "fine_labels": [100] + list(range(1, 100))}))
    elif damage == "truncated pickle":
        data = (folder / "train").read_bytes()
        (folder / "train").write_bytes(data[: len(data) // 2])
    elif damage == "forbidden class":
        class Evil:
            def __reduce__(self):
                return (eval, ("print('pwned')",))
        (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": Evil(), "coarse_label_names": []}))
    elif damage == "repeated class name":
        names = CIFAR100_FINE[:99] + ["apple"]
        (folder / "meta").write_bytes(python2_pickle({"fine_label_names": names, "coarse_label_names": CIFAR100_COARSE}))
    elif damage == "labels shorter than images":
        (folder / "test").write_bytes(python2_pickle({**cifar100_batch(np.arange(100), "testing"),
                                                     "fine_labels": list(range(99))}))


DAMAGES = {
    "missing meta": r"cifar-100-python/meta: missing \(CIFAR-100 python file\)",
    "wrong label key": r"cifar-100-python/train: not a CIFAR-100 python file \(no 'data' or 'fine_labels' entry\)",
    "label out of range": r"cifar-100-python: test labels outside 0..99; the files are damaged",
    "truncated pickle": r"cifar-100-python/train: not a CIFAR-100 python file \(",
    "forbidden class": r"cifar-100-python/meta: not a CIFAR-100 python file \(refusing to load builtins.eval",
    "repeated class name": r"cifar-100-python/meta: fine_label_names repeats a name; not CIFAR-100's meta file",
    "labels shorter than images": r"cifar-100-python/test: 100 images but 99 labels; the file is damaged",
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_cifar100_files_are_one_line(tmp_path, damage, capsys):
    _damage(write_cifar100(tmp_path), damage)
    with pytest.raises(FairquantError, match=DAMAGES[damage]) as error:
        load_dataset(multiclass("cifar100", tmp_path))
    assert "\n" not in str(error.value)
    assert "pwned" not in capsys.readouterr().out


def test_prepare_stage_refuses_a_damaged_cifar100_and_writes_nothing(tmp_path):
    _damage(write_cifar100(tmp_path / "raw"), "label out of range")
    out = tmp_path / "prepared"
    result = run_stage("prepare", ["--out", str(out)], tmp_path, {
        **MULTICLASS_STAGE, "data.source": "cifar100", "data.root": str(tmp_path / "raw"), "data.target": "class",
        "data.protected": ["class"], "prepare.image_size": 8})
    assert_clean_failure(result, "test labels outside 0..99; the files are damaged", out)


def test_prepare_stage_writes_cifar100_coarse_classes(tmp_path):
    from fairquant.data.prepare import load_prepared

    write_cifar100(tmp_path / "raw", per_class_train=2)
    result = run_stage("prepare", ["--out", str(tmp_path / "prepared")], tmp_path, {
        **MULTICLASS_STAGE, "data.source": "cifar100", "data.root": str(tmp_path / "raw"), "data.target": "class",
        "data.cifar100_labels": "coarse", "data.protected": ["class"], "evaluate.privileged_group": "fish",
        "prepare.image_size": 8})
    assert result.returncode == 0, result.stderr
    table, images, info = load_prepared(tmp_path / "prepared")
    assert info["task"] == "multiclass" and info["classes"] == CIFAR100_COARSE and info["samples"] == 300
    assert table["y_true"].dtype == np.int16 and images.shape == (300, 8, 8, 3)
    test_counts = {row["group"]: row["per_class"] for row in info["counts"] if row["split"] == "test"}
    assert test_counts["fish"] == {"fish": 5}  # class as group: each cell holds its own class only


# --- MNIST, Fashion-MNIST, CIFAR-10 ------------------------------------------------------------------

def write_mnist_like(root, folder, train_labels, test_labels):
    raw_dir = root / folder / "raw"
    raw_dir.mkdir(parents=True)
    for prefix, labels in (("train", train_labels), ("t10k", test_labels)):
        _write_idx(raw_dir / f"{prefix}-images-idx3-ubyte.gz", np.repeat(labels[:, None, None], 28, 1).repeat(28, 2))
        _write_idx(raw_dir / f"{prefix}-labels-idx1-ubyte.gz", labels)


def write_cifar10(root, train_labels, test_labels):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    chunks = np.array_split(train_labels, 5)
    for name, labels in [(f"data_batch_{i + 1}", chunk) for i, chunk in enumerate(chunks)] + [("test_batch", test_labels)]:
        batch = {"batch_label": name, "labels": [int(v) for v in labels], "data": _cifar_pixels(labels, labels),
                 "filenames": [f"{i}.png" for i in range(len(labels))]}
        (folder / name).write_bytes(python2_pickle(batch))
    (folder / "batches.meta").write_bytes(python2_pickle({"label_names": CIFAR10_CLASSES, "num_vis": 3072}))


def write_class_dataset(source, root, train_labels, test_labels):
    if source == "cifar10":
        write_cifar10(root, train_labels, test_labels)
    else:
        write_mnist_like(root, {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}[source], train_labels, test_labels)


CLASS_SOURCES = {"mnist": MNIST_CLASSES, "fashion_mnist": FASHION_CLASSES, "cifar10": CIFAR10_CLASSES}


@pytest.mark.parametrize("source", CLASS_SOURCES)
def test_class_datasets_give_every_class_in_label_order(tmp_path, source):
    rng = np.random.default_rng(1)
    write_class_dataset(source, tmp_path, rng.permutation(np.repeat(np.arange(10), 20)), np.repeat(np.arange(10), 3))
    raw = load_dataset(multiclass(source, tmp_path))  # no data.positive
    assert raw.classes == CLASS_SOURCES[source]
    assert np.array_equal(raw.arrays[:, 3, 4, 0], raw.table["y_true"].to_numpy())  # pixels carry their label
    assert (raw.table["class"] == np.array(raw.classes)[raw.table["y_true"]]).all()
    assert raw.table["y_true"].dtype == np.int16
    check_splits(raw.table, ["class"], raw.classes)
    counts = label_counts(raw.table, ["class"], raw.classes)
    assert {(r["split"], r["group"]): r["per_class"][r["group"]] == r["n"] for r in counts} == {
        (r["split"], r["group"]): True for r in counts}  # class as the group: each group holds only its class


@pytest.mark.parametrize("source", CLASS_SOURCES)
def test_binary_class_target_is_unchanged(tmp_path, source):
    write_class_dataset(source, tmp_path, np.repeat(np.arange(10), 4), np.repeat(np.arange(10), 2))
    positive = CLASS_SOURCES[source][:3]
    raw = load_dataset(DataParams(source=source, root=str(tmp_path), target="class", positive=positive,
                                  protected=["class"]))
    assert raw.classes is None and raw.table["y_true"].dtype == np.int8
    assert (raw.table["y_true"] == raw.table["class"].isin(positive)).all()


@pytest.mark.parametrize("source", ["mnist", "cifar10", "cifar100"])
def test_unfair_training_set_only_shrinks_the_minority_classes(tmp_path, source):
    """'unfairness-in-model-quantization': the unfair set is the fair one minus minority images; test untouched."""
    if source == "cifar100":
        write_cifar100(tmp_path, per_class_train=8, per_class_test=2)
        minority, n_classes = [4, 57], 100
    else:
        write_class_dataset(source, tmp_path, np.random.default_rng(2).permutation(np.repeat(np.arange(10), 40)),
                            np.repeat(np.arange(10), 5))
        minority, n_classes = [2, 7], 10
    fair = load_dataset(multiclass(source, tmp_path, minority_classes=minority)).table
    unfair = load_dataset(multiclass(source, tmp_path, minority_classes=minority, class_imbalance=0.25)).table
    per_class = len(fair[fair["split"] != "test"]) // n_classes
    is_minority = unfair["y_true"].isin(minority)
    pd.testing.assert_frame_equal(fair[fair["split"] == "test"].reset_index(drop=True),
                                  unfair[unfair["split"] == "test"].reset_index(drop=True))
    kept_majority = unfair[~is_minority & (unfair["split"] != "test")]
    fair_majority = fair[~fair["y_true"].isin(minority) & (fair["split"] != "test")]
    pd.testing.assert_frame_equal(fair_majority.reset_index(drop=True), kept_majority.reset_index(drop=True))
    fair_rows = set(zip(fair["sample_id"], fair["split"]))
    assert set(zip(unfair["sample_id"], unfair["split"])) <= fair_rows  # same images, same train/val assignment
    training = unfair[unfair["split"] != "test"]
    assert training.groupby("y_true").size().loc[minority].tolist() == [round(per_class * 0.25)] * 2
    assert training["y_true"].nunique() == n_classes


@pytest.mark.parametrize("source, minority, top", [("mnist", [3, 10], 9), ("cifar10", [-1], 9),
                                                   ("cifar100", [100], 99)])
def test_minority_class_outside_the_dataset_is_refused(tmp_path, source, minority, top):
    if source == "cifar100":
        write_cifar100(tmp_path, per_class_train=1)
    else:
        write_class_dataset(source, tmp_path, np.repeat(np.arange(10), 2), np.arange(10))
    with pytest.raises(FairquantError, match=rf"data.minority_classes lists {minority[-1]}, but {source} has classes "
                                             rf"0..{top}; list class indices of the dataset"):
        load_dataset(multiclass(source, tmp_path, minority_classes=minority, class_imbalance=0.5))


def test_coarse_cifar100_refuses_a_fine_class_index(tmp_path):
    write_cifar100(tmp_path, per_class_train=1)
    with pytest.raises(FairquantError, match=r"lists 20, but cifar100 has classes 0..19"):
        load_dataset(multiclass("cifar100", tmp_path, cifar100_labels="coarse", minority_classes=[20]))


def test_a_class_shrunk_to_no_training_image_is_refused_at_prepare(tmp_path):
    write_class_dataset("mnist", tmp_path, np.repeat(np.arange(10), 3), np.repeat(np.arange(10), 2))
    raw = load_dataset(multiclass("mnist", tmp_path, minority_classes=[6], class_imbalance=0.1))
    assert not (raw.table.loc[raw.table["split"] != "test", "y_true"] == 6).any() and raw.classes[6] == "6"
    with pytest.raises(FairquantError, match=r"class '6' of target has no training image \(1 such classes\)"):
        check_splits(raw.table, ["class"], raw.classes)


def test_a_class_absent_from_the_files_keeps_its_index_and_is_refused(tmp_path):
    labels = np.array([k for k in range(10) if k != 4])  # no 'deer' anywhere
    write_class_dataset("cifar10", tmp_path, np.repeat(labels, 4), labels)
    raw = load_dataset(multiclass("cifar10", tmp_path))
    assert raw.classes == CIFAR10_CLASSES and set(raw.table.loc[raw.table["class"] == "frog", "y_true"]) == {6}
    with pytest.raises(FairquantError, match="class 'deer' of target has no training image"):
        check_splits(raw.table, ["class"], raw.classes)


def test_prepare_stage_refuses_a_class_without_training_images(tmp_path):
    write_class_dataset("mnist", tmp_path / "raw", np.repeat(np.arange(10), 3), np.repeat(np.arange(10), 2))
    out = tmp_path / "prepared"
    result = run_stage("prepare", ["--out", str(out)], tmp_path, {
        **MULTICLASS_STAGE, "data.source": "mnist", "data.root": str(tmp_path / "raw"), "data.target": "class",
        "data.protected": ["class"], "data.minority_classes": [6], "data.class_imbalance": 0.1,
        "prepare.image_size": 8})
    assert_clean_failure(result, "class '6' of target has no training image", out)


# --- params ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("data, message", [
    ({"task": "multiclass", "positive": ["cat"], "source": "cifar10", "target": "class"},
     "data.positive is set but data.task is multiclass"),
    ({"source": "mnist", "class_imbalance": 0.5}, "data.class_imbalance is 0.5 but data.minority_classes is empty"),
    ({"source": "utkface", "class_imbalance": 0.5, "minority_classes": [1]},
     "shape MNIST / CIFAR training sets, but data.source is utkface"),
    ({"source": "celeba", "minority_classes": [1]}, "but data.source is celeba"),
    ({"source": "mnist", "class_imbalance": 0.5, "minority_classes": [2, 2]},
     "data.minority_classes names 2 more than once; list each class once"),
])
def test_params_refuse_inconsistent_multiclass_keys(data, message):
    with pytest.raises(FairquantError, match=message) as error:
        parse_params({"data": {"root": "x", **data}})
    assert "\n" not in str(error.value)


def test_prepare_stage_refuses_positive_with_multiclass(tmp_path):
    out = tmp_path / "prepared"
    result = run_stage("prepare", ["--out", str(out)], tmp_path, {**MULTICLASS_STAGE, "data.positive": ["1"]})
    assert_clean_failure(result, "data.positive is set but data.task is multiclass", out)


# --- UTKFace, FairFace, CelebA ----------------------------------------------------------------------------

def write_utkface(root, rows):
    """rows: (age, gender 0/1, race 0-4); names as the real set's ``age_gender_race_date.jpg.chip.jpg``."""
    folder = root / "UTKFace"
    folder.mkdir(parents=True)
    for i, (age, gender, race) in enumerate(rows):
        _jpeg(folder / f"{age}_{gender}_{race}_2017011617452{i:04d}.jpg.chip.jpg")
    return folder


def test_utkface_race_is_five_classes_in_the_datasets_order(tmp_path):
    rows = [(20 + i % 50, i % 2, (4 - i) % 5) for i in range(60)]  # race codes first met in reverse order
    write_utkface(tmp_path, rows)
    raw = load_dataset(multiclass("utkface", tmp_path, target="race", protected=["gender"]))
    assert raw.classes == list(UTK_RACES) == ["White", "Black", "Asian", "Indian", "Others"]
    by_name = raw.table.set_index("sample_id")
    for i, (age, gender, race) in enumerate(rows):
        row = by_name.loc[f"{age}_{gender}_{race}_2017011617452{i:04d}.jpg.chip.jpg"]
        assert row["y_true"] == race and row["gender"] == ("Male", "Female")[gender]
    counts = label_counts(raw.table, ["gender"], raw.classes)
    assert sum(sum(r["per_class"].values()) for r in counts) == 60


def test_a_multiclass_target_with_one_value_is_refused(tmp_path):
    write_utkface(tmp_path, [(30, i % 2, 0) for i in range(8)])
    with pytest.raises(FairquantError, match=r"target 'race' has only the value 'White'; a multi-class target needs at "
                                             r"least two values"):
        load_dataset(multiclass("utkface", tmp_path, target="race", protected=["gender"]))


FAIRFACE_RACES = ["White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern"]
FAIRFACE_AGES = ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70"]


def write_fairface(root, n_train=63, n_val=21):
    """``fairface_label_{train,val}.csv`` (file,age,gender,race,service_test) beside ``train/`` and ``val/``."""
    rng = np.random.default_rng(4)
    for name, n in (("train", n_train), ("val", n_val)):
        (root / name).mkdir(parents=True)
        frame = pd.DataFrame({"file": [f"{name}/{i + 1}.jpg" for i in range(n)],
                              "age": [FAIRFACE_AGES[i % 9] for i in range(n)],
                              "gender": rng.choice(["Male", "Female"], n),
                              "race": [FAIRFACE_RACES[::-1][i % 7] for i in range(n)],
                              "service_test": rng.choice([True, False], n)})
        frame.to_csv(root / f"fairface_label_{name}.csv", index=False)
        for file in frame["file"]:  # the reader refuses a listed image that is missing
            (root / file).touch()
    return root


def test_fairface_race_is_seven_classes_with_gender_and_age_protected(tmp_path):
    write_fairface(tmp_path)
    raw = load_dataset(multiclass("fairface", tmp_path, target="race", protected=["gender", "age"]))
    assert raw.classes == FAIRFACE_RACES  # FairFace's own label order, not the alphabet
    labels = pd.concat([pd.read_csv(tmp_path / f"fairface_label_{n}.csv") for n in ("train", "val")])
    truth = labels.set_index("file").loc[raw.table["sample_id"]]
    assert (np.array(FAIRFACE_RACES)[raw.table["y_true"]] == truth["race"].to_numpy()).all()
    assert (raw.table[["gender", "age"]].to_numpy() == truth[["gender", "age"]].to_numpy()).all()
    assert (raw.table["split"] == "test").sum() == 21
    check_splits(raw.table, ["gender", "age"], raw.classes)
    groups = {row["group"] for row in label_counts(raw.table, ["gender", "age"], raw.classes)}
    assert "Female & 20-29" in groups  # intersectional groups, as for a binary target


def test_fairface_age_groups_as_target_are_in_age_order(tmp_path):
    write_fairface(tmp_path)
    raw = load_dataset(multiclass("fairface", tmp_path, target="age", protected=["race", "gender"]))
    assert raw.classes == FAIRFACE_AGES
    assert set(raw.table["race"]) == set(FAIRFACE_RACES)


def test_celeba_binary_attribute_as_a_two_class_target(tiny_celeba):
    binary = load_dataset(DataParams(root=str(tiny_celeba), target="Smiling", protected=["Male"]))
    two = load_dataset(multiclass("celeba", tiny_celeba, target="Smiling", protected=["Male"]))
    assert binary.classes is None and two.classes == ["not Smiling", "Smiling"]
    assert np.array_equal(binary.table["y_true"].to_numpy(), two.table["y_true"].to_numpy())  # class 1 = Smiling
    male = load_dataset(multiclass("celeba", tiny_celeba, target="Male", protected=["Eyeglasses"]))
    assert male.classes == ["Female", "Male"]


MNIST_DAMAGES = {
    "truncated images": r"train-images-idx3-ubyte.gz: header says shape \[20, 28, 28\] but the file holds",
    "label out of range": r"MNIST/raw: test labels outside 0..9; the files are damaged",
    "fewer labels than images": r"MNIST/raw: train has 20 images but labels of shape \(19,\); the IDX files do not match",
}


@pytest.mark.parametrize("damage", MNIST_DAMAGES)
def test_damaged_mnist_files_are_one_line(tmp_path, damage):
    write_mnist_like(tmp_path, "MNIST", np.repeat(np.arange(10), 2), np.arange(10))
    raw_dir = tmp_path / "MNIST" / "raw"
    if damage == "truncated images":
        path = raw_dir / "train-images-idx3-ubyte.gz"
        data = gzip.decompress(path.read_bytes())
        path.write_bytes(gzip.compress(data[: len(data) - 100]))
    elif damage == "label out of range":
        _write_idx(raw_dir / "t10k-labels-idx1-ubyte.gz", np.array([10] + list(range(1, 10))))
    else:
        _write_idx(raw_dir / "train-labels-idx1-ubyte.gz", np.repeat(np.arange(10), 2)[:19])
    with pytest.raises(FairquantError, match=MNIST_DAMAGES[damage]) as error:
        load_dataset(multiclass("mnist", tmp_path))
    assert "\n" not in str(error.value)


def test_readme_cifar100_example_is_valid_params():
    import re
    from pathlib import Path

    import yaml

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    snippet = re.search(r"```yaml\n(data:\n  source: cifar100\n.*?)```", readme, re.S).group(1)
    params = parse_params({**yaml.safe_load(snippet), "mitigate": {"before_compression": [], "after": []}})
    assert params.data.task == "multiclass" and params.data.minority_classes == [4, 57]
