"""The project's shape: no import cycles, no oversized modules, lower layers stay low.

Every `import` statement counts, including those inside functions: an import deferred into a
function still ties the two modules together (it only moves the failure to run time).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("zoo", "algorithms", "rewards")
MAX_LINES = 450
# The lower layers: pure math, plain records and registries. They must not reach up into the
# loop, the sampler or the command line, even indirectly.
LOWER = ("zoo.ops", "zoo.types", "zoo.registry")
UPPER_PREFIXES = ("zoo.trainer", "zoo.rollout", "zoo.cli")


def project_modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for f in sorted((REPO / pkg).rglob("*.py")):
            parts = list(f.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = f
    return mods


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    """The project module `name` refers to (itself or its nearest enclosing package), or None."""
    while name:
        if name in mods:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """Project modules imported anywhere in `path` (top level, functions, classes, try blocks)."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                r = _resolve(a.name, mods)
                if r:
                    out.add(r)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{target}.{a.name}"
                if sub in mods:
                    out.add(sub)
                    continue
                r = _resolve(target, mods)
                if r:
                    out.add(r)
    out.discard(module)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = project_modules()
    return {m: imports_of(m, p, mods) for m, p in mods.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, on_stack, stack, sccs = {}, {}, set(), [], []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sccs


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in graph.get(todo.pop(), ()):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


# -- the checker itself, on hand-made graphs and files --------------------------------------------

def test_cycle_finder_on_hand_made_graphs():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}}) == [["a", "b", "c"]]


def test_imports_inside_functions_and_relative_imports_count(tmp_path):
    mods = {"p": tmp_path / "p" / "__init__.py", "p.a": tmp_path / "p" / "a.py",
            "p.b": tmp_path / "p" / "b.py", "p.c": tmp_path / "p" / "c.py"}
    src = ("import os\n"
           "def f():\n    from p.b import thing\n"
           "class K:\n    def g(self):\n        from . import c\n")
    mods["p.a"].parent.mkdir()
    mods["p.a"].write_text(src)
    assert imports_of("p.a", mods["p.a"], mods) == {"p.b", "p.c"}


# -- the project -----------------------------------------------------------------------------------

def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles (every import statement counts, also inside functions): " + \
        "; ".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", sorted(project_modules()))
def test_module_size(module):
    n = len(project_modules()[module].read_text().splitlines())
    assert n <= MAX_LINES, f"{module} has {n} lines (budget {MAX_LINES}): split it along a seam"


@pytest.mark.parametrize("low", LOWER)
def test_lower_layers_import_no_loop_sampler_or_cli(low):
    up = sorted(m for m in reachable(import_graph(), low) if m.startswith(UPPER_PREFIXES))
    assert not up, f"{low} reaches {up}: the lower layers must not depend on the trainer, sampler or CLI"


def test_zoo_names_no_concrete_strategy_module():
    """`zoo` may import the `algorithms` package (to register everything) but never a strategy file."""
    bad = sorted((m, d) for m, deps in import_graph().items() if m.startswith("zoo")
                 for d in deps if d.startswith("algorithms."))
    assert not bad, bad


def test_rewards_import_neither_zoo_nor_algorithms():
    bad = sorted((m, d) for m, deps in import_graph().items() if m.startswith("rewards")
                 for d in deps if d.split(".")[0] in ("zoo", "algorithms"))
    assert not bad, bad


def test_readme_layout_names_every_module():
    """The README's Layout section names every module of zoo/ and rewards/ (and no module that is gone)."""
    readme = (REPO / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    named = set(__import__("re").findall(r"\b(\w+)\.py\b", layout))
    have = {f.stem for pkg in ("zoo", "zoo/integrations", "rewards") for f in (REPO / pkg).glob("*.py")
            if not f.stem.startswith("__")}
    assert not have - named, f"modules missing from the README layout: {sorted(have - named)}"
    assert not named - have, f"README layout names modules that do not exist: {sorted(named - have)}"


def test_nothing_outside_tests_points_beside_the_checkout():
    """A user's clone stands alone: no file outside tests/ sends readers or code to ../shared."""
    import subprocess

    try:
        files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                               text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    bad = []
    for f in files:
        p = REPO / f
        if f.startswith("tests/") or not p.is_file() or p.suffix in (".png", ".whl", ".pt"):
            continue
        try:
            text = p.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        if "../shared" in text or "shared/ALGORITHMS" in text:
            bad.append(f)
    assert not bad, f"files outside tests/ refer to ../shared: {bad}"
