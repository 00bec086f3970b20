"""The import rules between the layers (DESIGN.md: data flows one way, each layer knows only the
ones below it): core <- demos <- ui, core <- viz <- ui; viz draws without torch or models;
demos computes without gradio; scale (the model tier) never imports the web front."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# package -> top-level modules it must never import (anywhere in the file, lazily included)
FORBIDDEN = {
    "core": {"torch", "transformers", "captum", "gradio", "demos", "ui", "viz", "scale", "bench"},
    "viz": {"torch", "transformers", "captum", "gradio", "demos", "ui", "scale", "bench"},
    "demos": {"gradio", "ui", "viz", "bench"},
    "scale": {"gradio", "ui", "viz", "bench"},
    "ui": {"bench", "torch", "transformers", "captum"},  # a thin front: models live in demos (or the Ray tier)
}
# Documented exceptions: (file, module) -> why.
ALLOWED = {
    ("viz/bertviz_html.py", "torch"): "bertviz takes torch tensors (imported lazily, when a bertviz view is drawn)",
}
FILES = [(pkg, path) for pkg in FORBIDDEN for path in sorted((ROOT / pkg).rglob("*.py"))]


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("pkg,path", FILES, ids=[str(f.relative_to(ROOT)) for _, f in FILES])
def test_layer_imports(pkg, path):
    name = str(path.relative_to(ROOT))
    bad = {m for m in imported_roots(path) & FORBIDDEN[pkg] if (name, m) not in ALLOWED}
    assert not bad, f"{name} imports {sorted(bad)}"


def test_every_layer_is_checked():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "scripts", "bench"}  # tools
    assert packages <= set(FORBIDDEN), f"add the import rules of {sorted(packages - set(FORBIDDEN))}"


def test_the_rule_catches_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    import torch\n    from demos import loading\n")
    assert imported_roots(bad) == {"torch", "demos"}
