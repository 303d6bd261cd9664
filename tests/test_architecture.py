"""The house keeps its shape: no import circles between the project's modules,
a DICOM engine without Django, and documents that name only what exists."""

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("portal", "accounts", "pulls")


def _modules() -> dict[str, Path]:
    found = {}
    for path in REPO.glob("*/**/*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        if parts[0] not in PACKAGES or "migrations" in parts:
            continue
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports: at the top, in functions, under
    TYPE_CHECKING alike (a circle is a circle however it is hidden)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            named = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, *([base] if base else [])])
            submodules = [f"{base}.{alias.name}" for alias in node.names]
            # "from package import module" imports the module, not the package's __init__
            named = submodules if all(m in modules for m in submodules) else [base]
        else:
            continue
        for target in named:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                targets.add(target)
    return targets


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, name, modules) for name, path in modules.items()}


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_of_the_project_takes_part_in_an_import_circle():
    circles = _circles(_graph())
    assert circles == [], "import circles (break each: the lower module must not import the upper)"


def test_the_check_finds_a_circle_when_there_is_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(graph) == [["a", "b", "c"]]


def _absolute_imports(path: Path) -> list[str]:
    """The modules a file imports by absolute name (any depth: lazy ones too)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.append(node.module or "")
    return names


@pytest.mark.parametrize("package", ["pulls.dicom", "pulls.sandbox"])
def test_the_dicom_engine_and_the_sandbox_import_no_django_and_nothing_above_them(package):
    """pulls/dicom is plain pynetdicom/pydicom (DESIGN §4); the sandbox starts
    real peers for tests and benchmarks: neither imports Django, nor a module
    of the project above it."""
    modules = _modules()
    offending = []
    for name, path in modules.items():
        if name != package and not name.startswith(f"{package}."):
            continue
        for imported in _absolute_imports(path):
            root = imported.split(".")[0]
            outside = root in PACKAGES and not (
                imported == package or imported.startswith(f"{package}.")
            )
            engine = package == "pulls.sandbox" and imported.startswith("pulls.dicom")
            if root == "django" or (outside and not engine):
                offending.append(f"{name} imports {imported}")
    assert offending == []


# `pulls/dicom/client.py`, `bench/retrieve.py`, `docs/operations.md`, `Makefile`...
_TOP = "pulls|portal|accounts|bench|docs|tests|scripts|static|templates"
_PATH = re.compile(rf"`((?:{_TOP})/[\w./-]*)`")
_MODULE = re.compile(r"`((?:pulls|portal|accounts)(?:\.\w+)+)`")
_LINK = re.compile(r"\]\((?!https?:|mailto:|#)([^)#\s]+)")


def _documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_every_path_and_module_the_documents_name_exists():
    missing = []
    for doc in _documents():
        text = doc.read_text(encoding="utf-8")
        for path in _PATH.findall(text):
            if not (REPO / path.rstrip("/")).exists():
                missing.append(f"{doc.name}: `{path}`")
        for module in _MODULE.findall(text):
            candidates = [module.replace(".", "/") + ".py", module.replace(".", "/")]
            attribute = module.rpartition(".")[0].replace(".", "/") + ".py"
            if not any((REPO / c).exists() for c in [*candidates, attribute]):
                missing.append(f"{doc.name}: `{module}`")
        for link in _LINK.findall(text):
            if not (doc.parent / link).exists():
                missing.append(f"{doc.name}: link to {link}")
    assert missing == []


DEID_PURE = ["keys", "profile", "walker", "files", "writer", "shown"]


@pytest.mark.parametrize("module", DEID_PURE)
def test_the_de_identification_itself_imports_no_django(module):
    """pulls/deid's own work (the profile, the keys, the walk, files, the C-GET
    writer, what viewers see) runs where Django is not: only the DICOM engine
    and its own pure modules below it."""
    path = REPO / "pulls" / "deid" / f"{module}.py"
    allowed = ("pulls.dicom",) + tuple(f"pulls.deid.{m}" for m in DEID_PURE)
    offending = [
        imported
        for imported in _absolute_imports(path)
        if imported.split(".")[0] == "django"
        or (imported.split(".")[0] in PACKAGES and not imported.startswith(allowed))
    ]
    assert offending == []
