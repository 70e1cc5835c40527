"""The image store: written row by row through the file, read back by rows without growing the process."""

import numpy as np
import pytest

from fairquant.io import ImageRows, image_store_writer, read_images, read_rows


def _store(tmp_path, n=10, side=4):
    pixels = np.arange(n * side * side * 3, dtype=np.int64).astype(np.uint8).reshape(n, side, side, 3)
    path = tmp_path / "images.npy"
    with image_store_writer(path, n, (side, side, 3)) as writer:
        writer.append(pixels[:4])
        writer.append(pixels[4:])
    return read_images(path), pixels


def test_writer_fills_a_store_that_numpy_reads(tmp_path):
    images, pixels = _store(tmp_path)
    assert isinstance(images, np.memmap) and np.array_equal(images, pixels)
    assert np.array_equal(np.load(tmp_path / "images.npy"), pixels)


def test_writer_shrinks_the_store_to_the_rows_appended(tmp_path):
    path = tmp_path / "images.npy"
    rows = np.full((3, 2, 2, 3), 7, np.uint8)
    with image_store_writer(path, 100_000, (2, 2, 3)) as writer:
        writer.append(rows)
    images = np.load(path, mmap_mode="r")
    assert images.shape == (3, 2, 2, 3) and np.all(images == 7)
    assert path.stat().st_size == images.offset + rows.nbytes


def test_writer_leaves_nothing_when_the_block_fails(tmp_path):
    with pytest.raises(RuntimeError, match="decoding failed"):
        with image_store_writer(tmp_path / "images.npy", 5, (2, 2, 3)) as writer:
            writer.append(np.zeros((2, 2, 2, 3), np.uint8))
            raise RuntimeError("decoding failed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("pixels, message", [
    (np.zeros((2, 2, 2, 3), np.float32), r"rows must be uint8 \(n, 2, 2, 3\), found float32"),
    (np.zeros((2, 3, 3, 3), np.uint8), r"found uint8 \(2, 3, 3, 3\)"),
    (np.zeros((6, 2, 2, 3), np.uint8), "image store holds 5 rows; cannot append 6 after 0"),
])
def test_writer_refuses_rows_that_do_not_fit(tmp_path, pixels, message):
    with pytest.raises(ValueError, match=message):
        with image_store_writer(tmp_path / "images.npy", 5, (2, 2, 3)) as writer:
            writer.append(pixels)


@pytest.mark.parametrize("rows", [[1, 4, 8], [8, 1, 4, 4], [], [3]])
def test_read_rows_returns_the_rows_in_the_order_asked(tmp_path, rows):
    images, pixels = _store(tmp_path)
    assert np.array_equal(read_rows(images, np.array(rows, dtype=np.int64)), pixels[rows])
    assert np.array_equal(read_rows(pixels, np.array(rows, dtype=np.int64)), pixels[rows])  # plain arrays too


def test_image_rows_reads_only_what_is_sliced(tmp_path):
    images, pixels = _store(tmp_path)
    view = ImageRows(images, np.array([9, 2, 5, 7]))
    assert len(view) == 4 and view.shape == (4, 4, 4, 3)
    assert np.array_equal(view[1:3], pixels[[2, 5]]) and np.array_equal(view[0], pixels[9])
    assert np.array_equal(np.asarray(view), pixels[[9, 2, 5, 7]])


def test_reading_releases_the_mapping_but_never_a_copy_on_write_change(tmp_path):
    psutil = pytest.importorskip("psutil")
    path = tmp_path / "images.npy"
    with image_store_writer(path, 4096, (64, 64, 3)) as writer:  # 48 MiB
        writer.append(np.full((4096, 64, 64, 3), 3, np.uint8))
    images = read_images(path)
    process = psutil.Process()
    before = process.memory_info().rss
    for start in range(0, 4096, 128):
        assert read_rows(images, np.arange(start, start + 128))[:, 0, 0, 0].sum() == 3 * 128
    assert process.memory_info().rss - before < 16 * 2**20  # the store is 48 MiB
    changed = np.load(path, mmap_mode="c")
    changed[0] = 9
    read_rows(changed, np.arange(2))
    assert changed[0, 0, 0, 0] == 9


def test_identical_checkpoints_are_identical_bytes(tmp_path):
    """Found by the end-to-end reproducibility test: torch named the archive after the random temporary file."""
    import torch

    from fairquant.io import save_checkpoint

    state = {"w": torch.arange(6.0)}
    save_checkpoint(tmp_path / "a" / "model.pt", state, {"kind": "fp32"})
    save_checkpoint(tmp_path / "b" / "model.pt", state, {"kind": "fp32"})
    assert (tmp_path / "a" / "model.pt").read_bytes() == (tmp_path / "b" / "model.pt").read_bytes()


# Found by the bad-input probe: damaged artifacts and outputs that collide with what is on disk were tracebacks.
def test_damaged_json_and_parquet_are_one_clear_error(tmp_path):
    from fairquant.errors import FairquantError
    from fairquant.io import read_json, read_table

    (tmp_path / "info.json").write_text('{"name": "fp32", ')
    (tmp_path / "test.parquet").write_bytes(b"PAR1 truncated")
    with pytest.raises(FairquantError, match=r"info.json: not valid JSON .*re-run the stage that writes it"):
        read_json(tmp_path / "info.json")
    with pytest.raises(FairquantError, match=r"test.parquet: not a readable parquet table .*re-run the stage"):
        read_table(tmp_path / "test.parquet")


def test_an_output_that_collides_with_a_file_or_folder_is_refused_before_any_work(tmp_path):
    from fairquant.errors import FairquantError
    from fairquant.io import atomic_dir, atomic_path

    (tmp_path / "file").write_text("mine")
    ran = []
    with pytest.raises(FairquantError, match="is a file; the output is a folder"):
        with atomic_dir(tmp_path / "file"):
            ran.append(1)
    with pytest.raises(FairquantError, match="is a folder; the output is a file"):
        with atomic_path(tmp_path):
            ran.append(1)
    with pytest.raises(FairquantError, match="a file stands where a folder of its path should be"):
        with atomic_path(tmp_path / "file" / "gaps.csv"):
            ran.append(1)
    assert not ran and (tmp_path / "file").read_text() == "mine"


def test_a_torchrun_rank_other_than_0_writes_nothing(tmp_path, monkeypatch):
    """Every rank runs the whole stage; rank 0 alone moves its outputs into place, the others' are discarded."""
    from fairquant.io import atomic_dir, write_json

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with atomic_dir(tmp_path / "out") as tmp:
        write_json(tmp / "a.json", {"rank": 1})
    write_json(tmp_path / "b.json", {"rank": 1})
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("RANK", "0")
    write_json(tmp_path / "b.json", {"rank": 0})
    assert [p.name for p in tmp_path.iterdir()] == ["b.json"]
