"""Kill safety: a stage interrupted while it writes leaves neither output nor temporary, and a temporary left by a
killed run is removed at the next start, never shipped. (benchmarks/faults.py kills every stage of the study with
SIGKILL and checks that `dvc repro` then gives the clean run's bytes.)"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_stages import stage_params

from fairquant.io import atomic_dir, atomic_path, remove_stale_temporaries, write_json

ROOT = Path(__file__).resolve().parents[1]
STALE_AGE_S = 60  # what a stale temporary's mtime is moved back by (older than io.STALE_GRACE_S)


def temporaries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob(".*.tmp"))


def age(path: Path, seconds: float = STALE_AGE_S) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def killed_writer(folder: Path, name: str, kind: str) -> Path:
    """A writer of ``folder / name`` killed with SIGKILL mid-block (a forked child of this process): its
    temporary (``kind`` 'dir' or 'path') stays, as a real killed stage's does, and is returned."""
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        try:
            with (atomic_dir if kind == "dir" else atomic_path)(folder / name) as tmp:
                (tmp / "part.bin" if kind == "dir" else tmp).write_bytes(b"half")
                os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    (left,) = temporaries(folder)
    return left


def big_celeba(source: Path, root: Path, count: int) -> Path:
    """The generated CelebA layout with its images repeated (hard links) to ``count``: slow enough to interrupt."""
    images = sorted((source / "img_align_celeba").iterdir())
    lines = {name: (source / name).read_text().splitlines()
             for name in ("list_attr_celeba.txt", "list_eval_partition.txt", "identity_CelebA.txt")}
    attr_rows = {line.split()[0]: line.split(maxsplit=1)[1] for line in lines["list_attr_celeba.txt"][2:]}
    splits = dict(line.split() for line in lines["list_eval_partition.txt"])
    identities = dict(line.split() for line in lines["identity_CelebA.txt"])
    (root / "img_align_celeba").mkdir(parents=True)
    attrs, partition, identity = [str(count), lines["list_attr_celeba.txt"][1]], [], []
    for i in range(count):
        original = images[i % len(images)]
        name = f"{i + 1:06d}.jpg"
        os.link(original, root / "img_align_celeba" / name)
        attrs.append(f"{name} {attr_rows[original.name]}")
        partition.append(f"{name} {splits[original.name]}")
        identity.append(f"{name} {int(identities[original.name]) + len(images) * (i // len(images))}")
    for name, rows in (("list_attr_celeba.txt", attrs), ("list_eval_partition.txt", partition),
                       ("identity_CelebA.txt", identity)):
        (root / name).write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def interrupted_prepare(tmp_path_factory, tiny_celeba):
    """``python -m stages.prepare`` sent SIGINT (Ctrl-C) while it decodes into its temporary folder."""
    tmp_path = tmp_path_factory.mktemp("interrupted")
    root = big_celeba(tiny_celeba, tmp_path / "celeba", count=3000)
    params = stage_params(tmp_path, {"data.root": str(root), "prepare.image_size": 16, "prepare.workers": 1})
    out = tmp_path / "data" / "prepared"
    process = subprocess.Popen([sys.executable, "-m", "stages.prepare", "--out", str(out), "--params", str(params)],
                               cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not temporaries(out.parent) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    staged = temporaries(out.parent)
    time.sleep(0.3)  # into decoding: the temporary folder holds a partial image store
    running = process.poll() is None
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert staged and running, "prepare finished (or never started writing) before the interrupt: make it bigger"
    return out, process.returncode, stderr


def test_prepare_interrupted_with_ctrl_c_leaves_no_output_and_no_temporary(interrupted_prepare):
    out, _, _ = interrupted_prepare
    assert not out.exists() and temporaries(out.parent) == [], sorted(out.parent.iterdir())


def test_prepare_interrupted_with_ctrl_c_exits_130_with_one_line(interrupted_prepare):
    _, code, stderr = interrupted_prepare
    assert code == 130, stderr
    assert stderr.strip().splitlines() == ["interrupted: the stage stopped before finishing; no output was written"]


@pytest.mark.parametrize("kind", ["dir", "path"])
def test_a_temporary_left_by_a_killed_writer_is_removed_at_the_next_start_and_never_shipped(tmp_path, kind):
    stale = killed_writer(tmp_path, "out", kind)
    age(stale)
    with (atomic_dir if kind == "dir" else atomic_path)(tmp_path / "out") as tmp:
        assert not stale.exists()  # removed before the new run writes anything
        if kind == "dir":
            write_json(tmp / "info.json", {"run": 2})
        else:
            tmp.write_text("run 2\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    shipped = tmp_path / "out"
    assert (sorted(p.name for p in shipped.iterdir()) == ["info.json"] if kind == "dir"
            else shipped.read_text() == "run 2\n")


def test_a_live_writers_temporary_is_left_alone(tmp_path):
    """Two runs writing the same output in one folder: the second does not delete the first's temporary."""
    with atomic_dir(tmp_path / "out") as first:
        (first / "part.bin").write_bytes(b"first")
        age(first)
        with atomic_dir(tmp_path / "out") as second:
            assert first.exists() and second != first
            (second / "part.bin").write_bytes(b"second")
        assert (tmp_path / "out" / "part.bin").read_bytes() == b"second"
        assert remove_stale_temporaries(tmp_path / "out") == [] and first.exists()
    assert (tmp_path / "out" / "part.bin").read_bytes() == b"first" and temporaries(tmp_path) == []


def test_only_the_outputs_own_temporaries_are_removed(tmp_path):
    other = killed_writer(tmp_path, "out.json", "path")  # another output's: `.out.json.<8>.tmp`, not `.out.<8>.tmp`
    mine = killed_writer(tmp_path / "sub", "out", "dir")
    unrelated = tmp_path / ".notes.tmp"
    unrelated.write_text("a user's file")
    for path in (other, mine, unrelated):
        age(path)
    assert remove_stale_temporaries(tmp_path / "out") == []
    assert remove_stale_temporaries(tmp_path / "sub" / "out") == [mine]
    assert other.exists() and unrelated.exists() and not mine.exists()


def test_a_fresh_temporary_is_not_taken_for_a_stale_one(tmp_path):
    """Within io.STALE_GRACE_S of its creation a temporary may not be locked yet: it is left alone."""
    stale = killed_writer(tmp_path, "out", "dir")
    age(stale, 0)
    assert remove_stale_temporaries(tmp_path / "out") == [] and stale.exists()
    age(stale)
    assert remove_stale_temporaries(tmp_path / "out") == [stale] and not stale.exists()


def test_atomic_outputs_get_the_permissions_a_plain_write_would(tmp_path):
    """mkstemp / mkdtemp make 0600 / 0700 temporaries; a shipped output has the umask's usual permissions."""
    umask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "file.json") as tmp:
            tmp.write_text("{}")
        with atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "x").write_text("x")
    finally:
        os.umask(umask)
    assert (tmp_path / "file.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o755


def test_ctrl_c_while_a_stage_still_imports_torch_is_one_line_and_130(tmp_path):
    """The first seconds of a stage import torch; Ctrl-C there is the same one line, not an import traceback."""
    process = subprocess.Popen([sys.executable, "-m", "stages.predict", "--help"], cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)  # past the interpreter's start, inside the stage module's imports
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines() == ["interrupted: the stage stopped before finishing; no output was written"]
