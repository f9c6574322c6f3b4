"""Which library modules a stage script imports, directly or through other library modules."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "cnn_compress"


def _imports(path: Path) -> set[str]:
    """Library module names imported anywhere in ``path`` (function-local imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cnn_compress"):
            parts = node.module.split(".")
            if len(parts) > 1:
                found.add(parts[1])
            else:  # from cnn_compress import atomic, report
                found |= {a.name for a in node.names if (PKG / f"{a.name}.py").exists()}
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "cnn_compress" and len(parts) > 1:
                    found.add(parts[1])
    return found


def module_closure(script: Path) -> set[str]:
    """Repo-relative paths of every library file the script depends on."""
    todo, seen = list(_imports(script)), set()
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        todo += list(_imports(PKG / f"{mod}.py"))
    return {f"src/cnn_compress/{m}.py" for m in seen} | {"src/cnn_compress/__init__.py"}


def sections_read(script: Path) -> set[str]:
    """Params sections a stage script loads (the config classes it names)."""
    from cnn_compress.config import SECTIONS

    names = {n.id for n in ast.walk(ast.parse(script.read_text())) if isinstance(n, ast.Name)}
    return {sec for sec, cls in SECTIONS.items() if cls.__name__ in names}


def stage_script(cmd: str) -> Path:
    """The stage script a dvc.yaml cmd runs (``... python stages/<name>.py [options]``)."""
    return ROOT / next(part for part in cmd.split() if part.startswith("stages/") and part.endswith(".py"))


def expected_params(cmd: str, params: dict) -> set[str]:
    """Dotted params a stage must list: every key of each section its script reads, except that
    ``prune.ratios`` (the sweep list) belongs to the merge stage alone (so adding a ratio re-runs
    nothing else), a stage given ``--ratio`` on its command line does not list ``prune.ratio``, and
    only sweep branches (``--dir``) list the ``*.sweep_formats`` keys they alone read."""
    script = stage_script(cmd)
    if script.name == "sweep.py":
        return {"prune.ratios"}
    keys = {f"{sec}.{key}" for sec in sections_read(script) for key in params[sec]} - {"prune.ratios"}
    if "--dir" not in cmd:
        keys = {k for k in keys if not k.endswith(".sweep_formats")}
    return keys - {"prune.ratio"} if "--ratio" in cmd else keys


if __name__ == "__main__":
    for script in sorted((ROOT / "stages").glob("*.py")):
        print(script.stem, sorted(module_closure(script)))
