"""The package's layers, checked on the source (module-level imports and imports inside functions alike).

The rules (README "Layout"):

* The package is built in layers: core (``constants``, ``errors``, ``fileio``, ``paths``, package data) <
  ``weights`` < ``models`` < the package root < ``convert`` and ``complexity`` < the integrations
  (``classification``, ``detection``, ``mobile``). A module imports only from its own layer or a lower one.
* The integrations never import each other, except that ``mobile`` may export a detector built by
  ``detection``'s public builder. Lightning, detectron2 and the export APIs are imported by the integrations only.
* The import graph has no cycle.
* One edge goes up, declared in ``UPWARD_AT_CALL``: the weights reader converts a public checkpoint layout (mmpretrain,
  megvii) when it meets one, and the converter builds the network, so it lives above the models. The reader imports
  it inside the function that needs it (never at module level: checked), so the dependency is explicit and works
  whatever else was imported, without the import-time cycle a module-level import would make. The floor and cycle
  checks leave out exactly this edge.
* The package never imports the developer tools (the top-level ``tools/`` package); the tools use the package's
  public API only, in Python's sense: no module and no name whose name starts with an underscore
  (``shufflenet.models.create_model`` and ``shufflenet.mobile.verify`` are public, ``shufflenet.models._TIMM_CFG``
  and ``shufflenet.detection._compat`` are not).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "shufflenet"
TOOLS = REPO / "tools"

# Layer of each top-level part of the package; a module may import its own layer or lower ones.
FLOORS = {
    "constants": 0,
    "data": 0,  # the seeded sample stream and the CPU count, shared by classification and detection
    "errors": 0,
    "fileio": 0,
    "paths": 0,
    "resources": 0,
    "configs": 0,
    "weights": 1,
    "models": 2,
    "shufflenet": 4,  # the package root re-exports floors 0-2
    "convert": 4,
    "complexity": 4,
    "classification": 5,
    "detection": 5,
    "mobile": 5,
}
# The one upward edge (module -> module it imports inside a function only); see the module docstring.
UPWARD_AT_CALL = {("shufflenet.weights.io", "shufflenet.convert.checkpoints")}
# Integrations never import each other, except: mobile exports detectors built by detection's public builder.
ALLOWED_ACROSS = {("mobile", "detection")}
THIRD_PARTY_ABOVE_MODELS = ("pytorch_lightning", "lightning", "detectron2", "executorch", "torch.export")


def _modules() -> Dict[str, Path]:
    mods = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imports(name: str, path: Path) -> List[str]:
    """Absolute names of every ``shufflenet`` module or third-party module imported anywhere in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append(mod)
            # ``from . import x`` / ``from .models import registry``: x may itself be a module
            out += [f"{mod}.{a.name}" for a in node.names]
    return out


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "shufflenet"


def _graph() -> Dict[str, Set[str]]:
    mods = _modules()
    graph: Dict[str, Set[str]] = {}
    for name, path in mods.items():
        graph[name] = {m for m in _imports(name, path) if m in mods and m != name and (name, m) not in UPWARD_AT_CALL}
    return graph


def _module_level_imports(path: Path) -> Set[str]:
    """The names a module imports at its top level (not inside a function or class)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out: Set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            out.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_the_one_upward_edge_is_imported_at_call_time_only():
    mods = _modules()
    for src, dst in UPWARD_AT_CALL:
        assert dst in _imports(src, mods[src]), f"{src} no longer imports {dst}: drop the exception"
        top = _module_level_imports(mods[src])
        tail = dst.split(".", 1)[1]  # convert.checkpoints
        assert not any(t.lstrip(".").endswith(tail) or t == dst for t in top), f"{src} imports {dst} at module level"


def test_every_import_goes_to_the_same_floor_or_below():
    bad = []
    mods = _modules()
    for name, targets in _graph().items():
        src_part = _part(name)
        for target in targets:
            dst_part = _part(target)
            if dst_part == src_part:
                continue
            if (src_part, dst_part) in ALLOWED_ACROSS:
                continue
            if FLOORS[dst_part] > FLOORS[src_part]:
                bad.append(f"{name} imports {target} ({dst_part} is above {src_part})")
            elif FLOORS[dst_part] == FLOORS[src_part] == FLOORS["classification"]:
                bad.append(f"{name} imports {target} (one integration imports another)")
        if FLOORS[src_part] <= FLOORS["models"] or src_part in ("convert", "complexity"):
            third = [m for m in _imports(name, mods[name]) if m.startswith(THIRD_PARTY_ABOVE_MODELS)]
            bad += [f"{name} imports {m} (only the integrations may)" for m in third]
    assert not bad, "\n".join(sorted(bad))


def test_no_import_cycle():
    graph = _graph()

    # A package imports its own submodules when it re-exports them; that is not a cycle by itself, but a
    # submodule importing its package back (directly or through others) while the package imports it is.
    def is_child(child: str, parent: str) -> bool:
        return child.startswith(parent + ".")

    edges = {m: {t for t in ts if not is_child(m, t)} for m, ts in graph.items()}
    state: Dict[str, int] = {}
    cycles: List[List[str]] = []

    def visit(node: str, stack: List[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_function_level_and_relative_imports(tmp_path):
    """The checker itself: an upward import hidden inside a function is found."""
    mod = tmp_path / "shufflenet" / "models" / "x.py"
    mod.parent.mkdir(parents=True)
    mod.write_text("def f():\n    from ..classification import cli\n    from . import registry\n")
    found = _imports("shufflenet.models.x", mod)
    assert "shufflenet.classification.cli" in found and "shufflenet.models.registry" in found


def _tool_modules() -> Dict[str, Path]:
    return {
        f"tools.{p.relative_to(TOOLS).with_suffix('').as_posix().replace('/', '.')}": p for p in TOOLS.rglob("*.py")
    }


def _public_use_problems(name: str, path: Path) -> List[str]:
    """What in ``path`` (a tool) goes past the package's public modules."""

    def private_module(mod: str) -> bool:
        parts = mod.split(".")
        return parts[0] == "shufflenet" and any(p.startswith("_") for p in parts)

    bad = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            bad += [f"{name} imports {a.name} (not a public module)" for a in node.names if private_module(a.name)]
        elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "shufflenet":
            if private_module(node.module):
                bad.append(f"{name} imports {node.module} (not a public module)")
            bad += [f"{name} imports {node.module}.{a.name} (a private name)" for a in node.names if a.name[0] == "_"]
    return bad


def test_the_package_never_imports_the_tools():
    bad = [
        f"{name} imports {m}"
        for name, path in _modules().items()
        for m in _imports(name, path)
        if m == "tools" or m.startswith("tools.")
    ]
    assert not bad, "\n".join(bad)


def test_tools_use_only_the_packages_public_modules():
    tools = _tool_modules()
    assert "tools.train_benchmark" in tools and "tools.ablations" in tools
    bad = [b for name, path in tools.items() for b in _public_use_problems(name, path)]
    assert not bad, "\n".join(sorted(bad))


def test_the_public_use_checker_sees_private_modules_and_names(tmp_path):
    """The checker itself: a private module (imported or imported from) and a private name are each found; public
    modules and names pass."""
    mod = tmp_path / "x.py"
    mod.write_text(
        "from shufflenet.models import create_model\n"
        "import shufflenet.classification\n"
        "from shufflenet.models.registry import get_spec\n"
        "def f():\n"
        "    import shufflenet.detection._compat\n"
        "    from shufflenet import _private\n"
        "    from shufflenet.models import _TIMM_CFG\n"
    )
    found = _public_use_problems("tools.x", mod)
    assert any("shufflenet.detection._compat" in b for b in found)
    assert any("shufflenet._private" in b for b in found)
    assert any("_TIMM_CFG" in b for b in found)
    assert not any(
        "create_model" in b or b.endswith("shufflenet.classification (not a public module of the package)")
        for b in found
    )
    assert len(found) == 3, found
