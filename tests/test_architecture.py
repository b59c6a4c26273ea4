"""The package structure holds: the dependency direction daemon -> detectors <- trainer, and no
import cycles between the modules of daemon/, detectors/ and trainer/."""

import ast
import re
from collections import deque
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"detectors": {"daemon", "trainer"}, "daemon": {"trainer"}, "trainer": {"daemon"}}
PACKAGES = tuple(sorted(FORBIDDEN))


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    tops = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            tops |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            tops.add(node.module.split(".")[0])
    return tops


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_direction(package):
    bad = []
    for f in sorted((ROOT / package).rglob("*.py")):
        hits = imported_top_levels(f) & FORBIDDEN[package]
        if hits:
            bad.append(f"{f.relative_to(ROOT)} imports {sorted(hits)}")
    assert not bad, "\n".join(bad)


# --- import cycles ------------------------------------------------------------------------------
# The graph has one node per module (``daemon.cli``, ``detectors.runtime``) and an edge for every
# import of another module of the three packages, wherever it is written (module level or inside a
# function: a deferred import only hides a cycle), except under ``if TYPE_CHECKING:``.
# ``from a.b import c`` is an edge to ``a.b.c`` when that is a module, else to ``a.b``.


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_files(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(f, root): f for p in PACKAGES for f in sorted((root / p).rglob("*.py"))}


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and _type_checking(node):
            todo.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        todo.extend(ast.iter_child_nodes(node))


def module_imports(mod: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``mod`` (its source at ``path``) imports."""

    def owner(name: str) -> str | None:  # the longest known prefix: a.b.func -> a.b
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..y import z
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        out |= {m for m in map(owner, names) if m is not None and m != mod}
    return out


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    files = module_files(root)
    return {m: module_imports(m, p, set(files)) for m, p in files.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other (Tarjan, iterative), each sorted; singletons left out."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                group = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    group.append(w)
                    if w == v:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


def a_cycle(graph: dict[str, set[str]], group: list[str]) -> str:
    """One concrete cycle through the first module of ``group``: ``a -> b -> a``."""
    start, members = group[0], set(group)
    came_from: dict[str, str] = {}
    todo = deque([start])
    while todo:
        v = todo.popleft()
        for w in sorted(graph[v] & members):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return " -> ".join([start, *reversed(path[:-1]), start])
            if w not in came_from:
                came_from[w] = v
                todo.append(w)
    raise AssertionError(f"{group} is not a cycle")


def test_cycle_finder_names_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e2"}, "e2": set()}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert a_cycle(graph, ["a", "b", "c"]) == "a -> b -> c -> a"


def test_import_graph_sees_deferred_and_relative_imports(tmp_path):
    pkg = tmp_path / "daemon"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "one.py").write_text("def f():\n    from daemon.sub import two\n")
    (pkg / "sub" / "two.py").write_text("from ..one import f\nfrom typing import TYPE_CHECKING\n"
                                        "if TYPE_CHECKING:\n    from daemon import three\n")
    (pkg / "three.py").write_text("import daemon.one\n")
    graph = import_graph(tmp_path)
    assert graph["daemon.one"] == {"daemon.sub.two"}
    assert graph["daemon.sub.two"] == {"daemon.one"}  # the TYPE_CHECKING import is no edge
    assert strongly_connected(graph) == [["daemon.one", "daemon.sub.two"]]


def test_no_import_cycles():
    graph = import_graph()
    cycles = [a_cycle(graph, g) for g in strongly_connected(graph)]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


# --- docs/architecture.md -----------------------------------------------------------------------

ARCHITECTURE_MD = ROOT / "docs" / "architecture.md"
DOCUMENTED = (*PACKAGES, "benchmarks")


def documented_modules(text: str) -> set[str]:
    """``package/entry`` for every backticked entry of the module column of the packages table."""
    out, package = set(), None
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) < 3 or cells[0] == "package" or cells[0].startswith("---"):  # not a row, header, rule
            continue
        package = cells[0] or package
        if package in DOCUMENTED:
            out |= {f"{package}/{name}" for name in re.findall(r"`([^`]+)`", cells[1])}
    return out


def undocumented(text: str, root: Path = ROOT) -> list[str]:
    listed = documented_modules(text)
    files = [f for p in PACKAGES for f in (root / p).rglob("*.py")]
    files += [f for f in (root / "benchmarks").glob("*") if f.suffix in (".py", ".sh")]
    missing = []
    for f in sorted(files):
        rel = f.relative_to(root).as_posix()
        if f.name == "__init__.py":
            folder = f.parent.relative_to(root).as_posix()
            if folder not in PACKAGES and f"{folder}/" not in listed:
                missing.append(f"{folder}/")
        elif rel not in listed:
            missing.append(rel)
    return missing


def test_architecture_doc_lists_every_module():
    missing = undocumented(ARCHITECTURE_MD.read_text())
    assert not missing, "docs/architecture.md does not list: " + ", ".join(missing)


def test_architecture_doc_check_sees_a_missing_module(tmp_path):
    for rel in ("daemon/__init__.py", "daemon/app.py", "daemon/new.py", "daemon/kafka/__init__.py",
                "daemon/kafka/state.py", "benchmarks/soak.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    for p in ("detectors", "trainer"):
        (tmp_path / p).mkdir()
    doc = ("| package | module | what |\n| --- | --- | --- |\n| daemon | `app.py`, `kafka/state.py` | x |\n"
           "| benchmarks | `soak.py` | y |\n")
    assert undocumented(doc, tmp_path) == ["daemon/kafka/", "daemon/new.py"]


def test_architecture_doc_links_stay_inside_the_repository():
    text = ARCHITECTURE_MD.read_text()
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        path = (ARCHITECTURE_MD.parent / target.split("#")[0]).resolve()
        if "://" in target or not path.is_relative_to(ROOT) or not path.exists():
            bad.append(target)
    bad += [m for m in re.findall(r"`(\.\./[^`]*)`", text)]  # paths named outside the checkout
    assert not bad, bad
