"""Imports and contract names, checked by reading the source (ARCHITECTURE.md, 'Imports' and 'Contract').

* A project import (``vreloc_tf``, ``vreloc``, ``pipeline``, ``serving``) sits at the top of its
  module. Inside a function only where the module it names would load a heavy dependency (TensorFlow,
  Apache Beam) into a command that does not need it, and then the statement carries its reason: a
  ``# heavy: ...`` comment on its first line or on the line just above it. At most
  ``MAX_FUNCTION_IMPORTS`` of them.
* No import circles, function-level imports included: a circle hidden inside a function is still a
  circle (it only fails later, on first call, in whichever order the modules happen to load).
* ``vreloc --help`` and every command's ``--help`` load neither TensorFlow nor Apache Beam.
* The model's tensor names and the benchmark's numbers are spelled once, in ``vreloc_tf/contract.py``;
  every other module imports them.
* ``vreloc_tf/`` is in rooms (model, data, training, evaluation, search), at most 12 modules at its top.
"""
import ast
import glob
import os
import re
import subprocess
import sys
from typing import Dict, List, Set, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("vreloc_tf", "vreloc", "pipeline", "serving")
MAX_FUNCTION_IMPORTS = 25
REASON = re.compile(r"#\s*heavy:\s*\S")  # the marker of a function-level import and its reason


def _modules() -> Dict[str, str]:
    """Dotted module name -> path, for every module of the four packages."""
    out = {}
    for package in PACKAGES:
        for path in glob.glob(os.path.join(ROOT, package, "**", "*.py"), recursive=True):
            name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
            out[name[: -len(".__init__")] if name.endswith(".__init__") else name] = path
    return out


MODULES = _modules()


def _targets(node, module: str, is_package: bool) -> List[str]:
    """The project modules an import statement loads (``from pkg import mod`` names pkg.mod)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: resolved against this module's package
            parts = module.split(".") if is_package else module.split(".")[:-1]
            parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join(parts + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    return sorted({n for n in names if n.split(".")[0] in PACKAGES})


def _imports() -> List[Tuple[str, ast.stmt, bool, List[str]]]:
    """(module, statement, inside a function?, project modules it loads) for every project import."""
    found = []
    for module, path in sorted(MODULES.items()):
        tree = ast.parse(open(path).read(), path)

        def visit(node, in_function):
            for child in ast.iter_child_nodes(node):
                inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    targets = _targets(child, module, path.endswith("__init__.py"))
                    if targets:
                        found.append((module, child, inside, targets))
                visit(child, inside)

        visit(tree, False)
    return found


def _has_reason(path: str, node: ast.stmt) -> bool:
    lines = open(path).read().splitlines()
    first = node.lineno - 1
    above = lines[first - 1].strip() if first > 0 else ""
    return bool(REASON.search(lines[first]) or (above.startswith("#") and REASON.search(above)))


def _cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One import circle of ``graph`` (the modules in order, the first repeated at the end), or []."""
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = 2
        path.pop()
        return []

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return []


def test_project_imports_are_at_module_top_unless_heavy_with_a_reason():
    inner = [(m, node) for m, node, inside, _ in _imports() if inside]
    unexplained = [f"{MODULES[m]}:{node.lineno}" for m, node in inner if not _has_reason(MODULES[m], node)]
    assert not unexplained, ("project imports inside functions without a '# heavy: <reason>' comment (move them to "
                             "the module's top):\n  " + "\n  ".join(unexplained))
    assert len(inner) <= MAX_FUNCTION_IMPORTS, (
        f"{len(inner)} project imports inside functions (at most {MAX_FUNCTION_IMPORTS}):\n  "
        + "\n  ".join(f"{MODULES[m]}:{node.lineno}" for m, node in inner))


def test_no_import_circles_function_level_imports_included():
    graph: Dict[str, Set[str]] = {m: set() for m in MODULES}
    for module, _, _, targets in _imports():
        graph[module].update(t for t in targets if t in MODULES and t != module)
    cycle = _cycle(graph)
    assert not cycle, "import circle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_circle_and_accepts_a_tree():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []



def test_no_command_module_loads_tensorflow_or_beam():
    """Importing every command module (what `vreloc CMD --help` does) loads neither TensorFlow nor Beam."""
    code = ("import sys; from vreloc import cli\n"
            "for name in cli.COMMANDS: cli.command_module(name)\n"
            "print(sorted(m for m in ('tensorflow', 'keras', 'apache_beam') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def _string_literals(path: str):
    """(line, value) of every string constant of a module that is not a docstring."""
    tree = ast.parse(open(path).read(), path)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_the_tensor_names_are_spelled_once():
    """The model's and the signature's tensor names as string literals: in vreloc_tf/contract.py only.

    ("query", "reference", "start", "end" and "score" are also the keys of pair lists, figure labels and
    JSON results, so the names checked are those that mean a tensor and nothing else.)"""
    from vreloc_tf import contract

    names = {contract.QUERY_LENGTH, contract.REFERENCE_LENGTH, contract.PROBABILITIES, contract.SELF_ATTENTION,
             contract.PSEUDO_GROUNDTRUTH, contract.SELF_TARGET}
    spelled = [f"{path}:{line}: {value!r}" for module, path in sorted(MODULES.items()) if module != "vreloc_tf.contract"
               for line, value in _string_literals(path) if value in names]
    assert not spelled, "import the name from vreloc_tf.contract:\n  " + "\n  ".join(spelled)
    quoted = sum(open(path).read().count(f"{q}reference_length{q}") for path in MODULES.values() for q in "\"'")
    assert quoted <= 3, f"'reference_length' spelled {quoted} times"


def test_the_benchmark_numbers_are_spelled_once():
    """The feature dim 500 and the decoding limit 64 as defaults: named from vreloc_tf.contract."""
    spelled = []
    for module, path in sorted(MODULES.items()):
        if module == "vreloc_tf.contract":
            continue
        for node in ast.walk(ast.parse(open(path).read(), path)):
            defaults = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                defaults = [(a.arg, d) for a, d in zip(args.args[len(args.args) - len(args.defaults):], args.defaults)]
                defaults += [(a.arg, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
                defaults = [(node.target.id, node.value)]  # dataclass fields
            elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                defaults = [(node.targets[0].id.lower(), node.value)]  # constants (DEFAULT_DIM = 500)
            elif isinstance(node, ast.keyword) and node.arg == "default":
                defaults = [("default", node.value)]  # argparse defaults
            for name, value in defaults:
                if isinstance(value, ast.Constant) and (
                        (value.value == 500 and ("dim" in name or "component" in name or name == "default"))
                        or (value.value == 64 and name == "max_length")
                        or (value.value == 16 and name == "frames_per_feature")):
                    spelled.append(f"{path}:{value.lineno}: {name} = {value.value}")
    assert not spelled, "use vreloc_tf.contract's FEATURE_DIM / FULL_DECODE_MAX_LENGTH / FRAMES_PER_FEATURE:\n  " \
        + "\n  ".join(spelled)


ROOMS = ("data", "evaluation", "model", "search", "training")


def test_the_library_is_in_rooms_with_few_modules_at_the_top():
    """Issue #27: vreloc_tf/ keeps at most 12 modules at its top; the rest live in rooms, each of which says
    in its __init__ docstring what it holds."""
    top = sorted(n for n in os.listdir(os.path.join(ROOT, "vreloc_tf")) if n.endswith(".py"))
    assert len(top) <= 12, top
    rooms = sorted(n for n in os.listdir(os.path.join(ROOT, "vreloc_tf"))
                   if os.path.isfile(os.path.join(ROOT, "vreloc_tf", n, "__init__.py")))
    assert tuple(rooms) == ROOMS, rooms
    for room in rooms:
        with open(os.path.join(ROOT, "vreloc_tf", room, "__init__.py")) as fh:
            doc = ast.get_docstring(ast.parse(fh.read()))
        assert doc and len(doc) > 40, f"vreloc_tf/{room}/__init__.py says nothing of what the room holds"


ALLOWED = {"vreloc_tf": {"vreloc_tf"}, "pipeline": {"pipeline", "vreloc_tf"}, "serving": {"serving", "vreloc_tf"},
           "vreloc": set(PACKAGES)}


def test_packages_import_only_downwards():
    """vreloc_tf imports nothing of ours above it; pipeline and serving only vreloc_tf (never each other, never the
    command line); benchmarks, which cross packages, live in the top layer's room vreloc/bench/ (ARCHITECTURE.md)."""
    upward = sorted(f"{MODULES[m]}:{node.lineno} imports {t}" for m, node, _, targets in _imports() for t in targets
                    if t.split(".")[0] not in ALLOWED[m.split(".")[0]])
    assert not upward, "imports against the layering:\n  " + "\n  ".join(upward)


ROOM_ORDER = ("model", "data", "evaluation", "training", "search")  # a room imports only rooms before it


def test_rooms_import_only_earlier_rooms():
    """Inside vreloc_tf: the top modules import no room; model/ only the top; data/ model/; evaluation/ data/ and
    model/; training/ and search/ any of those (ARCHITECTURE.md). One direction, so a room can be read bottom-up."""
    def rank(module):
        parts = module.split(".")
        return ROOM_ORDER.index(parts[1]) if len(parts) > 2 and parts[1] in ROOM_ORDER else -1

    against = sorted(f"{MODULES[m]}:{node.lineno} imports {t}" for m, node, _, targets in _imports() for t in targets
                     if m.startswith("vreloc_tf") and t.startswith("vreloc_tf") and rank(t) > rank(m)
                     and t.split(".")[:2] != m.split(".")[:2])
    assert not against, "a room imports a later room (or a top module imports a room):\n  " + "\n  ".join(against)
