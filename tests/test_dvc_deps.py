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
    dvc.yaml (sorted: data first, then code; wrapped at 120 columns). Returns what it added, by stage."""
    stages = resolved_stages()
    need = {}
    for address, (cmd, deps) in stages.items():
        m = re.search(r"python -m (stages\.\w+)", cmd)
        closure = import_closure(module_file(m.group(1)))
        covered = [ROOT / d for d in deps]
        missing = {p.relative_to(ROOT).as_posix() for p in closure if not any(p == d or d in p.parents for d in covered)}
        if missing:
            need.setdefault(address.split("@")[0], set()).update(missing)
    text = (ROOT / "dvc.yaml").read_text()
    lines = text.split("\n")
    out, i, current = [], 0, None
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^  ([A-Za-z_]+):\s*$", line)
        if m:
            current = m.group(1)
        d = re.match(r"^(\s*)deps: \[", line)
        if d and current in need:
            j = i
            while not lines[j].rstrip().endswith("]"):
                j += 1
            body = " ".join(part.strip() for part in lines[i:j + 1])
            inner = body[body.index("[") + 1:body.rindex("]")]
            items = [x.strip() for x in inner.split(",") if x.strip()]
            items = sorted(set(items) | need[current], key=lambda x: (not x.startswith(('"', "data")), x.strip('"')))
            indent = d.group(1)
            prefix, cont = f"{indent}deps: [", " " * (len(indent) + len("deps: ["))
            wrapped, cur = [], prefix
            for k, item in enumerate(items):
                piece = item + ("," if k < len(items) - 1 else "]")
                if len(cur) + len(piece) + (0 if cur.endswith("[") or cur == cont else 1) > 120:
                    wrapped.append(cur.rstrip())
                    cur = cont + piece
                else:
                    cur += ("" if cur.endswith("[") or cur == cont else " ") + piece
            wrapped.append(cur)
            out.extend(wrapped)
            i = j + 1
            continue
        out.append(line)
        i += 1
    (ROOT / "dvc.yaml").write_text("\n".join(out))
    return {k: sorted(v) for k, v in need.items()}


if __name__ == "__main__":
    print(add_missing_deps() or "dvc.yaml lists every module its stages import")
