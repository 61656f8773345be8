"""The package's import structure: no import circle between hwkd's modules (lazy imports inside functions
count too) and the dependency direction README's architecture section states, package by package."""

import ast
from pathlib import Path

import hwkd

ROOT = Path(hwkd.__file__).resolve().parent

# lowest first: a package imports only itself and packages of earlier layers (README "Architecture")
LAYERS = (("errors",), ("config", "paths", "sysinfo", "store"), ("audio",), ("metrics", "models", "data"), ("kd",),
          ("train", "hw"), ("experiments", "search"), ("report",), ("cli",), ("__main__",))
RANK = {p: k for k, layer in enumerate(LAYERS) for p in layer}


def module_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """hwkd module -> the hwkd modules it imports anywhere in its body."""
    mods = {}
    for p in root.rglob("*.py"):
        if "assets" in p.relative_to(root).parts:      # shipped files (a standalone script), not modules
            continue
        parts = p.relative_to(root.parent).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    graph = {}
    for name, path in mods.items():
        pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                for a in node.names:
                    deps.add(f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base)
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "hwkd"


def test_no_import_circle_between_modules():
    assert cycles(module_graph()) == []


def test_packages_import_only_downwards():
    graph = module_graph()
    unknown = sorted({_package(m) for m in graph} - set(RANK) - {"hwkd"})
    assert unknown == [], f"place these packages in LAYERS (and README's architecture): {unknown}"
    upward = sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps
                    if _package(m) != "hwkd" and _package(d) != _package(m)
                    and RANK.get(_package(d), -1) >= RANK[_package(m)])
    assert upward == [], "imports against the dependency direction:\n" + "\n".join(upward)


def test_the_checks_see_a_circle_and_an_upward_import(tmp_path):
    """The walker is not blind: a planted circle and an upward import are found."""
    pkg = tmp_path / "hwkd"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "__init__.py").write_text("")
    (pkg / "models" / "a.py").write_text("def f():\n    from hwkd.models.b import g\n")
    (pkg / "models" / "b.py").write_text("from . import a\nfrom hwkd.report import card\n")
    (pkg / "report").mkdir()
    (pkg / "report" / "__init__.py").write_text("")
    (pkg / "report" / "card.py").write_text("")
    g = module_graph(pkg)
    assert cycles(g) == [["hwkd.models.a", "hwkd.models.b"]]
    assert "hwkd.report.card" in g["hwkd.models.b"] and RANK["report"] > RANK["models"]


def test_the_standalone_script_shipped_with_picks_imports_no_hwkd():
    """assets/enhance_onnx.py runs where hwkd is not installed: numpy, onnxruntime and the standard library only."""
    tree = ast.parse((ROOT / "assets" / "enhance_onnx.py").read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    import sys
    assert names - set(sys.stdlib_module_names) == {"numpy", "onnxruntime"}, names
