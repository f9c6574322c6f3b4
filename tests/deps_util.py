"""Which library files a stage script imports, directly or through other library modules."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def _module_file(dotted: str) -> Path | None:
    """``cnn_compress.prune.config`` -> src/cnn_compress/prune/config.py (or a package's __init__)."""
    base = SRC.joinpath(*dotted.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _imports(path: Path) -> set[Path]:
    """Library files imported anywhere in ``path`` (function-local imports too), with the
    ``__init__.py`` of every package on the way (Python runs them)."""
    found: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cnn_compress"):
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("cnn_compress")]
        for dotted in names:
            parts = dotted.split(".")
            for i in range(1, len(parts) + 1):
                if (f := _module_file(".".join(parts[:i]))) is not None:
                    found.add(f)
    return found


def module_closure(script: Path) -> set[str]:
    """Repo-relative paths of every library file the script depends on."""
    todo, seen = list(_imports(script)), set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += list(_imports(path))
    return {str(p.relative_to(ROOT)) for p in seen}


def covers(dep: str, path: str) -> bool:
    """A dep covers a file when it is that file or a folder above it."""
    return path == dep or path.startswith(dep.rstrip("/") + "/")


def stage_script(cmd: str) -> Path:
    """The stage script a dvc.yaml cmd runs (``... python stages/<name>.py [options]``)."""
    return ROOT / next(part for part in cmd.split() if part.startswith("stages/") and part.endswith(".py"))
