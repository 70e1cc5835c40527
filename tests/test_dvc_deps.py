"""dvc.yaml must list every project file a stage's command runs, so that an edit re-runs exactly the stages it
can change. The import closure is computed from the source (every import, also inside functions), and the
stages are read through DVC's own resolver (foreach/matrix expanded)."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fairquant", "stages")


def module_file(name: str) -> Path | None:
    """The project file of a dotted module name, or None for a third-party module."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, source: str | None = None) -> set[str]:
    """Dotted names of every module ``path`` imports; ``from pkg import name`` counts pkg.name when it is a module.
    Relative imports resolve against the file's package; dynamic imports are refused (they cannot be checked)."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text() if source is None else source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            module = ".".join(part for part in (base, node.module) if part)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__"):
            raise AssertionError(f"{path}: dynamic import at line {node.lineno}; import statically so deps can be checked")
    return names


def is_code(path: Path) -> bool:
    """A package marker holding only a docstring runs nothing."""
    body = ast.parse(path.read_text()).body
    return not (path.name == "__init__.py" and all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)
                                                   for n in body))


def import_closure(path: Path) -> set[Path]:
    seen, todo = set(), [path]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for name in imported_modules(current):
            parts = name.split(".")
            for k in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                found = module_file(".".join(parts[:k]))
                if found is not None and found not in seen:
                    todo.append(found)
    return {p for p in seen if is_code(p)}


def resolved_stages() -> dict[str, tuple[str, list[str]]]:
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        return {stage.addressing: (stage.cmd, [str(Path(d.def_path)) for d in stage.deps])
                for stage in repo.index.stages if stage.cmd}


def test_relative_imports_resolve_against_the_package():
    """Found in review: `from .metrics import x` was not followed."""
    names = imported_modules(ROOT / "fairquant" / "fairness" / "evaluation.py",
                             "from .metrics import fairness_metrics\nfrom . import seeds\n")
    assert {"fairquant.fairness.metrics", "fairquant.fairness.seeds"} <= names


def test_import_closure_follows_function_level_imports():
    closure = {p.relative_to(ROOT).as_posix() for p in import_closure(ROOT / "stages" / "finetune.py")}
    assert {"stages/finetune.py", "stages/_cli.py", "fairquant/training.py", "fairquant/params/__init__.py",
            "fairquant/errors.py", "fairquant/io.py"} <= closure


@pytest.mark.parametrize("address, cmd, deps", [(a, *v) for a, v in sorted(resolved_stages().items())])
def test_stage_deps_cover_every_project_module_its_command_imports(address, cmd, deps):
    match = re.search(r"python -m (stages\.\w+)", cmd)
    assert match, f"{address}: command does not run a stages.<name> module: {cmd}"
    closure = import_closure(module_file(match.group(1)))
    covered = [ROOT / d for d in deps]
    missing = sorted(p.relative_to(ROOT).as_posix() for p in closure
                     if not any(p == d or d in p.parents for d in covered))
    assert not missing, (f"dvc.yaml stage '{address}' runs code it does not list in deps: {missing}; "
                         "python tests/test_dvc_deps.py adds them")


@pytest.mark.parametrize("address, cmd, deps", [(a, *v) for a, v in sorted(resolved_stages().items())])
def test_stage_deps_list_no_project_module_its_command_does_not_import(address, cmd, deps):
    """An extra code dep re-runs a stage for an edit that cannot change it (and a moved file breaks dvc repro)."""
    closure = import_closure(module_file(re.search(r"python -m (stages\.\w+)", cmd).group(1)))
    listed = [d for d in deps if d.split("/")[0] in PACKAGES]
    files = [ROOT / d for d in listed if d.endswith(".py")]
    files += [f for d in listed if (ROOT / d).is_dir() for f in (ROOT / d).rglob("*.py") if is_code(f)]  # a folder dep
    extra = sorted(f.relative_to(ROOT).as_posix() for f in files if f not in closure)
    assert not extra, f"dvc.yaml stage '{address}' lists code its command does not import: {extra}"


def add_missing_deps() -> dict[str, list[str]]:
    """Add the project files each stage's command imports but does not list to its ``deps: [...]`` flow list in
    dvc.yaml (sorted: data first, then code; wrapped at 120 columns). Returns what it added, by stage. The edited
    file is parsed back and must equal the original with exactly those items added, or nothing is written (a
    block list, a comment inside the list or an unusual layout: add them by hand)."""

    need: dict[str, set[str]] = {}
    for address, (cmd, deps) in resolved_stages().items():
        closure = import_closure(module_file(re.search(r"python -m (stages\.\w+)", cmd).group(1)))
        covered = [ROOT / d for d in deps]
        missing = {p.relative_to(ROOT).as_posix() for p in closure if not any(p == d or d in p.parents for d in covered)}
        if missing:
            need.setdefault(address.split("@")[0], set()).update(missing)
    if need:
        path = ROOT / "dvc.yaml"
        path.write_text(with_deps_added(path.read_text(), need))
    return {name: sorted(modules) for name, modules in need.items()}


def with_deps_added(text: str, need: dict[str, set[str]]) -> str:
    """dvc.yaml's ``text`` with each stage's ``need`` added to its ``deps: [...]`` flow list; SystemExit when the
    result, parsed back, is not the original plus exactly those items."""
    import yaml

    lines, out, i, current = text.split("\n"), [], 0, None
    while i < len(lines):
        line = lines[i]
        named = re.match(r"^  ([A-Za-z0-9_][A-Za-z0-9_-]*):\s*(#.*)?$", line)
        if named:
            current = named.group(1)
        flow = re.match(r"^(\s*)deps: \[", line)
        if flow and current in need:
            j = i
            while not re.search(r"\]\s*$", lines[j]):
                if "#" in lines[j] or j + 1 == len(lines):
                    raise SystemExit(f"dvc.yaml stage {current!r}: a comment or an unclosed list in its deps; add "
                                     f"{sorted(need[current])} by hand")
                j += 1
            inner = " ".join(part.strip() for part in lines[i:j + 1])
            items = [x.strip() for x in inner[inner.index("[") + 1:inner.rindex("]")].split(",") if x.strip()]
            items = sorted(set(items) | need[current], key=lambda x: (not x.startswith(('"', "data")), x.strip('"')))
            indent = flow.group(1)
            cont = " " * (len(indent) + len("deps: ["))
            wrapped, row = [], f"{indent}deps: ["
            for k, item in enumerate(items):
                piece = item + ("," if k < len(items) - 1 else "]")
                fresh = row.endswith("[") or row == cont
                if len(row) + len(piece) + (0 if fresh else 1) > 120:
                    wrapped.append(row.rstrip())
                    row = cont + piece
                else:
                    row += ("" if fresh else " ") + piece
            wrapped.append(row)
            out.extend(wrapped)
            i = j + 1
            continue
        out.append(line)
        i += 1
    edited = "\n".join(out)
    before, after = yaml.safe_load(text)["stages"], yaml.safe_load(edited)["stages"]
    for name, modules in need.items():
        stage = before.get(name, {})
        body = stage.get("do", stage)
        if not isinstance(body.get("deps"), list):
            raise SystemExit(f"dvc.yaml stage {name!r} has no deps list; add {sorted(modules)} by hand")
        body["deps"] = sorted(set(body["deps"]) | modules)
    for stage in after.values():
        body = stage.get("do", stage)
        if isinstance(body.get("deps"), list):
            body["deps"] = sorted(set(body["deps"]))
    for stage in before.values():
        body = stage.get("do", stage)
        if isinstance(body.get("deps"), list):
            body["deps"] = sorted(set(body["deps"]))
    if before != after:
        raise SystemExit("dvc.yaml: the edit would change more than the deps lists (an unusual layout); nothing "
                         f"written: add by hand {({k: sorted(v) for k, v in need.items()})}")
    return edited


def test_deps_are_added_in_place_or_not_at_all():
    """The fixer (python tests/test_dvc_deps.py) puts a removed module back byte for byte, and refuses a list it
    cannot edit safely (a comment after its closing bracket once swallowed the next key)."""
    text = (ROOT / "dvc.yaml").read_text()
    start = text.index("\n  quantize_kmeans:")
    gap = text.index("fairquant/compress/start.py, ", start)
    removed = text[:gap] + text[gap + len("fairquant/compress/start.py, "):]
    need = {"quantize_kmeans": {"fairquant/compress/start.py"}}
    assert with_deps_added(removed, need) == text
    close = removed.index("stages/quantize_kmeans.py]", start) + len("stages/quantize_kmeans.py]")
    with pytest.raises(SystemExit, match="a comment or an unclosed list"):
        with_deps_added(removed[:close] + "  # code" + removed[close:], need)
    with pytest.raises(SystemExit, match="has no deps list"):
        with_deps_added(text, {"no_such_stage": {"fairquant/io.py"}})


if __name__ == "__main__":
    print(add_missing_deps() or "dvc.yaml lists every module its stages import")
