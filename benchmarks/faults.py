"""Fault injection: every stage of the shrunken default killed with SIGKILL at seeded random points, then recovered.

    python benchmarks/faults.py                              # every stage, 3 kill points each
    python benchmarks/faults.py --stages 'prepare|finetune'  # the stages whose name matches (re.search)
    python benchmarks/faults.py --points 1 --seed 7

The shrunken default (tests/study.py) is built in a fresh git repository and reproduced once, cleanly
(latency.repeats is 0 there, so two runs are byte-identical); its workspace is hashed (every file outside .git
and .dvc: each stage's outs and dvc.lock, and any litter). Then, for each stage in the clean run's order and each
kill point:

1. ``dvc repro -f --single-item <stage>``: DVC itself removes the stage's outputs and runs its command (the path a
   user's run takes; ``-f`` so that DVC runs it rather than skipping it as unchanged, and skips the run cache).
   The whole process group (DVC, the stage and any workers) is killed with SIGKILL at ``t`` seconds after DVC
   announces the stage, ``t`` drawn in the k-th of ``points`` equal slices of (0, the stage's clean duration)
   (stratified, so early, middle and late kills are all exercised; the duration runs from DVC's "Running stage"
   line to the next one in the clean run, so it covers DVC hashing the outputs and writing dvc.lock too).
2. ``dvc repro`` of the whole graph, by default with the killed stage's output objects moved out of the DVC
   cache for the recovery: what a kill during a stage's first run on new inputs leaves, where nothing in the cache
   can stand in for the stage, so DVC must re-run it from what the kill left, and its bytes must come out the
   same (a recovery that restores the stage from the cache counts as a failure; one that re-runs nothing is a
   kill that landed after DVC had recorded the stage as complete); DVC re-runs whatever else it then
   thinks changed (nothing, when they do). With ``--warm`` the cache is left whole: DVC then restores the killed
   stage's outputs from it as dvc.lock names them ("is cached - skipping run"), which checks DVC's recovery but
   not the stage's. The run cache is off either way (``--no-run-cache``).
3. The workspace against the clean run's: every output file and dvc.lock byte-identical, no file missing or
   extra, and no temporary (``.*.tmp``) anywhere in the repository (``.dvc`` included, ``.git`` not).

One line per kill, then a table per stage; the exit status is 1 if any kill did not recover identically.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.study import shrunken_params, study_env, study_repo

RUNNING = re.compile(r"Running stage '([^']+)'")
SKIPPED_DIRS = {".git", "__pycache__"}
DVC_INTERNAL = Path(".dvc")


@dataclass
class Kill:
    stage: str
    point: int
    planned_s: float
    killed_s: float | None = None  # None: the run finished before the kill time
    left_temporaries: int = 0  # .*.tmp present right after the kill (what the next start must clean)
    recovery_s: float = 0.0
    reran: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    note: str = ""  # what the kill left that the recovery must repair (not a failure by itself)

    @property
    def identical(self) -> bool:
        return not self.differences


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def workspace(repo: Path) -> dict[str, str]:
    """sha256 of every file outside .git and .dvc (DVC's cache and state), by path relative to ``repo``."""
    hashes = {}
    for folder, dirs, files in os.walk(repo):
        rel = Path(folder).relative_to(repo)
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS and not (rel == Path(".") and d == ".dvc")]
        for name in files:
            hashes[(rel / name).as_posix()] = file_hash(Path(folder) / name)
    return hashes


def temporaries(repo: Path) -> list[str]:
    """Every ``.*.tmp`` file or folder in the repository, .dvc included (fairquant's atomic writers' names)."""
    found = []
    for folder, dirs, files in os.walk(repo):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in dirs + files:
            if name.startswith(".") and name.endswith(".tmp"):
                found.append((Path(folder) / name).relative_to(repo).as_posix())
    return found


def differences(clean: dict[str, str], now: dict[str, str], litter: list[str]) -> list[str]:
    found = [f"differs {p}" for p in sorted(clean.keys() & now.keys()) if clean[p] != now[p]]
    found += [f"missing {p}" for p in sorted(clean.keys() - now.keys())]
    found += [f"extra {p}" for p in sorted(now.keys() - clean.keys())]
    return found + [f"temporary {p}" for p in litter if f"extra {p}" not in found]


class Run:
    """A dvc command in its own process group, its output read line by line with the time each line arrived."""

    def __init__(self, args: list[str], repo: Path, env: dict) -> None:
        self.start = time.monotonic()
        self.lines: list[tuple[float, str]] = []
        self.announced: dict[str, float] = {}
        self.seen = threading.Condition()
        self.process = subprocess.Popen(["dvc", *args], cwd=repo, env={**env, "PYTHONUNBUFFERED": "1"},
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            now = time.monotonic() - self.start
            with self.seen:
                self.lines.append((now, line.rstrip("\n")))
                match = RUNNING.search(line)
                if match:
                    self.announced.setdefault(match.group(1), now)
                self.seen.notify_all()

    def wait_announced(self, stage: str, timeout: float) -> float | None:
        with self.seen:
            self.seen.wait_for(lambda: stage in self.announced or self.process.poll() is not None, timeout)
            return self.announced.get(stage)

    def finish(self, timeout: float = 3600) -> int:
        code = self.process.wait(timeout)
        self.reader.join(timeout=10)
        return code

    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def kill_group(self) -> None:
        """SIGKILL the process group, and any descendant that left it (a stage that started its own session)."""
        try:
            descendants = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for child in descendants:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        self.finish()


def clean_run(repo: Path, env: dict) -> tuple[list[str], dict[str, float], float]:
    """``dvc repro`` once; the stages in the order DVC ran them, each one's duration, and the total."""
    run = Run(["repro"], repo, env)
    if run.finish() != 0:
        raise SystemExit(f"the clean dvc repro failed:\n{run.output()[-4000:]}")
    total = time.monotonic() - run.start
    order = sorted(run.announced, key=run.announced.get)
    ends = [run.announced[s] for s in order[1:]] + [total]
    locked = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    missing = set(locked) - set(order)
    if missing:
        raise SystemExit(f"stages in dvc.lock that the clean run did not announce: {sorted(missing)}")
    return order, {s: end - run.announced[s] for s, end in zip(order, ends)}, total


def kill_points(stage: str, duration: float, *, points: int, seed: int) -> list[float]:
    """``points`` kill times in (0, duration), one in each equal slice, seeded by ``seed`` and the stage name."""
    rng = random.Random(f"{seed}:{stage}")
    return [duration * (k + rng.uniform(0.02, 0.98)) / points for k in range(points)]


def cache_object(repo: Path, md5: str) -> Path:
    return repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


@contextlib.contextmanager
def cache_without(repo: Path, stage: str, *, warm: bool) -> Iterator[None]:
    """The DVC cache without ``stage``'s outputs (the objects dvc.lock names for them) for the length of the
    block, unless ``warm``; what the block did not put back is restored. Another stage whose output is
    byte-identical loses its object too, and DVC re-runs it as well."""
    if warm:
        yield
        return
    locked = (yaml.safe_load((repo / "dvc.lock").read_text()) or {}).get("stages", {})  # empty: see main's doc
    mine = {out["md5"] for out in locked.get(stage, {}).get("outs", []) if "md5" in out}
    aside = Path(tempfile.mkdtemp(prefix="faults-aside-"))
    moved = [(cache_object(repo, md5), aside / md5) for md5 in sorted(mine) if cache_object(repo, md5).exists()]
    for source, target in moved:
        shutil.move(source, target)
    try:
        yield
    finally:
        for source, target in moved:
            if not source.exists():
                shutil.move(target, source)
        shutil.rmtree(aside)


def same_outputs(repo: Path, stage: str) -> set[str]:
    """The other stages whose outputs include an object of ``stage``'s (byte-identical folders: the sweep's 8-bit
    point and the study's PTQ model, the sweep's fp32 of the study's architecture and finetune's)."""
    locked = (yaml.safe_load((repo / "dvc.lock").read_text()) or {}).get("stages", {})
    objects = lambda name: {out["md5"] for out in locked.get(name, {}).get("outs", []) if "md5" in out}  # noqa: E731
    mine = objects(stage)
    return {name for name in locked if name != stage and objects(name) & mine}


CLEAN_LOCK = "clean.lock"  # beside the study: the clean run's dvc.lock, as a user's last commit would hold it


def _is_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
    except ValueError:
        return False
    return True


def lock_is_whole(lock: Path) -> bool:
    """dvc.lock parses as DVC's mapping of stages (not empty, not cut off in the middle of a write)."""
    try:
        parsed = yaml.safe_load(lock.read_text())
    except yaml.YAMLError:
        return False
    return isinstance(parsed, dict) and isinstance(parsed.get("stages"), dict) and all(
        isinstance(entry, dict) for entry in parsed["stages"].values())


def kill_and_recover(repo: Path, env: dict, clean: dict[str, str], kill: Kill, *, warm: bool) -> Kill:
    run = Run(["repro", "-f", "--single-item", kill.stage], repo, env)
    announced = run.wait_announced(kill.stage, timeout=600)
    if announced is not None:
        time.sleep(max(0.0, announced + kill.planned_s - (time.monotonic() - run.start)))
    if run.process.poll() is None:
        kill.killed_s = time.monotonic() - run.start - (announced or 0.0)
        run.kill_group()
    else:
        run.finish()
    kill.left_temporaries = len(temporaries(repo))
    if not lock_is_whole(repo / "dvc.lock"):  # DVC 3 rewrites dvc.lock in place (open "w+"), not atomically
        # the kill hit DVC's own write: the README's remedy (git checkout dvc.lock) puts the last good one back
        shutil.copyfile(repo.parent / CLEAN_LOCK, repo / "dvc.lock")
        kill.note = "the kill hit DVC's in-place dvc.lock write; restored it as `git checkout dvc.lock` would"
    rwlock = repo / ".dvc" / "tmp" / "rwlock"  # DVC's own lock file, also written in place
    if rwlock.exists() and not _is_json(rwlock):
        rwlock.unlink()  # what a user does after "Unable to read RWLock-file": no DVC process holds it any more
        kill.note += ("; " if kill.note else "") + "the kill hit DVC's in-place .dvc/tmp/rwlock write; removed it"
    with cache_without(repo, kill.stage, warm=warm):
        recovery = Run(["repro", "--no-run-cache"], repo, env)
        code = recovery.finish()
    kill.recovery_s = time.monotonic() - recovery.start
    kill.reran = sorted(recovery.announced, key=recovery.announced.get)
    if not warm and f"Stage '{kill.stage}' is cached" in recovery.output():
        twins = [name for name in kill.reran if name != kill.stage and name in same_outputs(repo, kill.stage)]
        if twins:  # a stage re-run before it wrote the very same object back: DVC checks it out (legitimately)
            kill.note += (("; " if kill.note else "") + f"restored from the cache after {twins[0]}, whose output is "
                          "the same object, re-ran and wrote it back")
        else:
            kill.differences += [f"the recovery restored {kill.stage} from the cache instead of re-running it"]
    if code != 0:
        kill.differences += [f"recovery dvc repro failed ({code}): {recovery.output()[-600:]}"]
        return kill
    kill.differences += differences(clean, workspace(repo), temporaries(repo))
    return kill


def report_line(kill: Kill) -> str:
    when = f"killed at {kill.killed_s:6.2f} s" if kill.killed_s is not None else "finished before the kill"
    what = "; ".join(kill.differences[:5]) + (" ..." if len(kill.differences) > 5 else "")
    reran = ", ".join(kill.reran) or "nothing"
    return (f"{kill.stage:40s} point {kill.point}  planned {kill.planned_s:6.2f} s  {when}  "
            f"left {kill.left_temporaries} tmp  recovered in {kill.recovery_s:5.1f} s (reran {reran})  "
            f"identical {'yes' if kill.identical else 'NO'}{'  ' + what if what else ''}"
            f"{'  (' + kill.note + ')' if kill.note else ''}")


def summary(kills: list[Kill], durations: dict[str, float]) -> str:
    rows = [f"{'stage':40s} {'clean s':>8s} {'kills':>5s} {'landed':>6s} {'identical':>9s}"]
    for stage in dict.fromkeys(k.stage for k in kills):
        mine = [k for k in kills if k.stage == stage]
        landed = sum(k.killed_s is not None for k in mine)
        rows.append(f"{stage:40s} {durations[stage]:8.1f} {len(mine):5d} {landed:6d} "
                    f"{sum(k.identical for k in mine):4d}/{len(mine):<4d}")
    ok = sum(k.identical for k in kills)
    rows.append(f"total: {ok}/{len(kills)} kills recovered byte-identical with no temporary left, "
                f"{sum(k.killed_s is not None for k in kills)} landed while the stage ran")
    return "\n".join(rows)


def prepared_study(workdir: Path | None, reuse: Path | None):
    """A study after one clean ``dvc repro``: built and run here, or ``reuse`` (checked unchanged since)."""
    if reuse is not None:
        record = json.loads((reuse / "clean.json").read_text())
        if workspace(reuse / "study") != record["hashes"]:
            raise SystemExit(f"{reuse}/study no longer holds its clean run's bytes; build a new one")
        return reuse, record["order"], record["durations"], record["total"], record["hashes"]
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="faults-", dir=workdir))
    repo = base / "study"
    env = study_repo(repo, shrunken_params())
    order, durations, total = clean_run(repo, env)
    clean = workspace(repo)
    record = {"order": order, "durations": durations, "total": total, "hashes": clean}
    (base / "clean.json").write_text(json.dumps(record, indent=1))
    shutil.copyfile(repo / "dvc.lock", base / CLEAN_LOCK)
    return base, order, durations, total, clean


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", default="", help="regular expression (re.search) choosing the stages to kill")
    parser.add_argument("--points", type=int, default=3, help="kill points per stage")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warm", action="store_true", help="recover with the repository's DVC cache (see above)")
    parser.add_argument("--workdir", type=Path, help="where to build the study (default: a temporary folder)")
    parser.add_argument("--reuse", type=Path, help="a study folder this script built and ran cleanly before")
    args = parser.parse_args(argv)
    if args.points < 1:
        parser.error("--points must be at least 1")

    started = time.monotonic()
    base, order, durations, total, clean = prepared_study(args.workdir, args.reuse)
    repo, env = base / "study", study_env(base, base / "study")
    print(f"clean dvc repro: {total:.1f} s, {len(order)} stages, {len(clean)} files hashed ({base})", flush=True)
    if temporaries(repo):
        print(f"the clean run itself left temporaries: {temporaries(repo)}", flush=True)
        return 1
    chosen = [s for s in order if re.search(args.stages, s)]
    if not chosen:
        parser.error(f"--stages {args.stages!r} matches none of: {', '.join(order)}")

    kills = []
    for stage in chosen:
        for point, planned in enumerate(kill_points(stage, durations[stage], points=args.points, seed=args.seed)):
            kill = kill_and_recover(repo, env, clean, Kill(stage, point, planned), warm=args.warm)
            kills.append(kill)
            print(report_line(kill), flush=True)
    print(summary(kills, durations))
    print(f"wall time: {time.monotonic() - started:.0f} s (clean run {total:.0f} s)")
    return 0 if all(k.identical for k in kills) else 1


if __name__ == "__main__":
    sys.exit(main())
