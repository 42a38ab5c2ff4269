"""Package layout (issue 16 item 6): the nowcast road split by concern, imports one way, old names kept."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import diffcast

SRC = Path(diffcast.__file__).parent
ALIASES = ("diffcast.nowcasting", "diffcast.io_netcdf")


def _imports(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    package = ".".join(("diffcast",) + path.relative_to(SRC).with_suffix("").parts[:-1])
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def _modules(*rel: str) -> list[Path]:
    return [p for r in rel for p in ([SRC / r] if r.endswith(".py") else sorted((SRC / r).rglob("*.py")))]


@pytest.mark.parametrize("alias", ALIASES)
def test_deprecated_aliases_give_the_moved_objects(alias):
    mod = importlib.import_module(alias)
    assert mod._MOVED and set(mod.__all__) <= set(mod._MOVED)
    for name, target in mod._MOVED.items():
        with pytest.warns(DeprecationWarning, match=target):
            old = getattr(mod, name)
        assert old is getattr(importlib.import_module(target), name), name
    with pytest.raises(AttributeError):
        mod.no_such_name  # noqa: B018


def test_public_names_of_the_pipeline_and_writers():
    import diffcast.pipeline as pipeline
    import diffcast.writers as writers

    for pkg in (pipeline, writers):
        assert all(hasattr(pkg, n) for n in pkg.__all__)
    nowcasting = importlib.import_module("diffcast.nowcasting")
    missing = [n for n in nowcasting.__all__ if n not in pipeline.__all__ + writers.__all__ and n != "ProjectedGrid"]
    assert not missing


def test_imports_point_one_way():
    # readers, writers and the shared georeferencing know nothing of the pipeline that uses them
    for path in _modules("pipeline/readers", "writers", "geo.py", "data", "viz"):
        own = "diffcast.pipeline.readers" if "readers" in path.parts else "-"
        bad = {m for m in _imports(path) if m.startswith("diffcast.pipeline") and not m.startswith(own)}
        assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"
    for path in _modules("pipeline"):
        stage = path.stem
        later = {"grid": ("prepare", "model", "run", "inputs"), "units": ("prepare", "model", "run", "inputs"),
                 "inputs": ("prepare", "model", "run"), "prepare": ("model", "run"), "model": ("run",)}
        bad = {m for m in _imports(path) for s in later.get(stage, ()) if m.startswith(f"diffcast.pipeline.{s}")}
        assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"
    # only outside users go through the deprecated aliases
    for path in _modules("."):
        if path.stem in ("nowcasting", "io_netcdf") and path.parent == SRC:
            continue
        assert not {m for m in _imports(path) if m.startswith(ALIASES)}, path.relative_to(SRC)


def test_modules_stay_small():
    sizes = {str(p.relative_to(SRC)): len(p.read_text().splitlines())
             for p in _modules("pipeline", "writers", "geo.py", "data/radar", "demo", "cli", "streaming.py", "memory.py",
                               "api.py", "inference.py", "evaluation.py", "training/distill.py")}
    assert not {k: v for k, v in sizes.items() if v > 500}


def test_radar_package_is_split_one_way():
    # each module of diffcast.data.radar imports only those before it here, and stays small
    order = ["importers", "formats", "frames", "files", "series", "events", "archive"]
    pkg = "diffcast.data.radar"
    for path in _modules("data/radar"):
        assert len(path.read_text().splitlines()) <= 500, path.relative_to(SRC)
        if path.stem == "__init__":
            continue
        later = order[order.index(path.stem) + 1 :]
        bad = {m for m in _imports(path) for s in later if m == f"{pkg}.{s}" or m.startswith(f"{pkg}.{s}.")}
        assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"
