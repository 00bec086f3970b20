"""The shape of the house: demos/ shows its rooms (task modules at the top, every other module in
a sub-package of at most 12), no import cycle (lazy imports and constant-string imports counted),
a front that imports no model library, and one explainer protocol."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core import explainers as specs
from core import registry

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "core", "demos", "viz", "ui", "scale", "bench", "scripts")


def _modules() -> dict[str, Path]:
    out = {"app": ROOT / "app.py"}
    for pkg in PACKAGES[1:]:
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def _edges(name: str, path: Path, known: set[str]) -> set[str]:
    """Every project module `name` imports: at the top, inside functions, by `import_module("...")`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args):
            found |= _imported_by_name(node.args[0], known)
    return {m for m in found if m in known and m != name}


def _imported_by_name(arg: ast.expr, known: set[str]) -> set[str]:
    """What `import_module(arg)` may import: the constant's module, or for an f-string every module its constant
    prefix allows (`f"demos.{name}"`: every module directly in demos/)."""
    if isinstance(arg, ast.Constant):
        return {arg.value}
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        prefix = arg.values[0].value
        return {m for m in known if m.startswith(prefix) and "." not in m[len(prefix):]}
    return set()


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _edges(name, path, set(modules)) for name, path in modules.items()}
    assert _cycles(graph) == []


def test_no_name_is_looked_up_through_globals():
    """References to objects, not names: no `globals()[...]` read anywhere in the project's code (scale.deployments
    only WRITES its generated classes there, so that Ray can pickle them by reference)."""
    found = []
    for path in sorted(ROOT.glob("**/*.py")):
        if any(part in {".venv", "tests", "artifacts"} or part.startswith(".") for part in path.relative_to(ROOT).parts):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and isinstance(node.value, ast.Call)
                    and getattr(node.value.func, "id", "") == "globals"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["c", "b", "a"]]


def test_an_import_by_an_f_string_counts_as_an_edge_to_every_module_it_can_name(tmp_path):
    """The registry used to import `demos.{demo}` by an f-string, a cycle core.registry -> demos.sentiment ->
    core.registry that only this rule sees."""
    path = tmp_path / "registry.py"
    path.write_text('import importlib\n\ndef compute(demo):\n    return importlib.import_module(f"demos.{demo}")\n')
    known = {"core.registry", "demos.sentiment", "demos.qa", "demos.runtime.loading"}
    edges = _edges("core.registry", path, known)
    assert edges == {"demos.sentiment", "demos.qa"}
    assert _cycles({"core.registry": edges, "demos.sentiment": {"core.registry"}, "demos.qa": set()})


def test_demos_top_holds_only_task_modules():
    top = {p.stem for p in (ROOT / "demos").glob("*.py")} - {"__init__"}
    assert top == {spec.demo for spec in registry.TASKS}


def test_no_compute_sub_package_over_12_modules():
    for folder in {p.parent for p in (ROOT / "demos").rglob("__init__.py")} - {ROOT / "demos"}:
        modules = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
        assert len(modules) <= 12, f"{folder.relative_to(ROOT)} holds {len(modules)} modules"


@pytest.mark.slow  # a fresh interpreter imports gradio and the whole UI: about 10 s
def test_a_ray_front_imports_no_model_library():
    """Every ui module, the backend and the app built with XRAY_BACKEND=ray: no torch, transformers, captum."""
    code = (
        "import importlib, pkgutil, sys, ui, app\n"
        "for m in pkgutil.walk_packages(ui.__path__, 'ui.'): importlib.import_module(m.name)\n"
        "import scale.backend\n"
        "app.configure(app.parse_args(['--backend', 'ray']))\n"
        "app.build_app()\n"
        "print(sorted(m for m in ('torch', 'transformers', 'captum') if m in sys.modules))\n"
    )
    env = {**os.environ, "XRAY_BACKEND": "ray", "PYTHONPATH": str(ROOT), "GRADIO_ANALYTICS_ENABLED": "False"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_no_ui_function_is_over_50_lines():
    """Tabs keep their layout apart from their wiring (`_layout`, `_wire`): no function of ui/ runs
    over 50 lines, counted from its `def` to its last line, docstring included."""
    long = []
    for path in sorted((ROOT / "ui").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 50:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == [], "functions over 50 lines: " + ", ".join(long)


def test_every_explainer_is_bound_to_its_description():
    from demos.explain import catalog

    assert [e.spec for e in catalog.EXPLAINERS] == list(specs.EXPLAINERS)
    for e in catalog.EXPLAINERS:
        assert e.tasks and all(t in registry.KEYS for t in e.tasks)
        assert set(e.tasks).isdisjoint(e.not_for)


def test_an_unknown_parameter_is_an_error():
    from demos.explain import catalog

    with pytest.raises(TypeError, match="takes no parameter 'layerr'"):
        catalog.get("lens").run("sentiment", object(), layerr=2)
    from demos.explain import tasks

    with pytest.raises(TypeError, match="layerr"):  # an attribution too (no model is loaded: the call is refused)
        tasks.module("sentiment").attribute("A fine day.", layerr=2)


def test_every_explanation_runs_under_the_one_policy_and_declares_what_its_description_says():
    """Captum's attribution of every tab and every explainer of "Inside the model": one kind of description
    (core.explainers.ExplainerSpec), one runtime wrapper (demos.runtime.compute.explanation_policy)."""
    import dataclasses
    import inspect

    from demos.explain import catalog, tasks
    from demos.runtime.compute import How

    for e in catalog.EXPLAINERS:
        assert e._call.explanation_policy is True, e.name
    assert [f.name for f in dataclasses.fields(How) if f.name != "progress"] == [p.name for p in specs.ATTRIBUTION.params]
    assert [f.default for f in dataclasses.fields(How) if f.name != "progress"] == [
        p.default for p in specs.ATTRIBUTION.params]
    described = 0
    for spec in registry.TASKS:
        if not spec.attribute:
            with pytest.raises(KeyError):
                specs.attribution(spec.key)
            continue
        d = specs.attribution(spec.key)
        assert d.explains == "inputs" and d.progress
        module = tasks.module(spec.key)
        fn = getattr(module, spec.attribute)
        params = [p for p in inspect.signature(fn).parameters.values() if p.name != "progress"]
        assert [(p.name, p.default) for p in params[-len(d.params):]] == [(p.name, p.default) for p in d.params]
        assert "progress" in inspect.signature(fn).parameters
        worker = module._attribute if spec.key == "image" else fn  # the image tab first computes its answer
        assert worker.explanation_policy is True, spec.key
        described += 1
    assert described == 6


def test_a_function_that_does_not_match_its_description_is_refused():
    from demos.explain.protocol import Explainer

    def wrong(task, result, target=None, top=5):
        return None

    with pytest.raises(TypeError, match="declares"):
        Explainer(specs.ABLATE, wrong)


def test_methods_integrate_as_captum_says():
    import inspect

    import captum.attr

    for key, m in specs.METHODS.items():
        params = inspect.signature(getattr(captum.attr, m.input_class).attribute).parameters
        assert m.integrates == ("n_steps" in params), key
