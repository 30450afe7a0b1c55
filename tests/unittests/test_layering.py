"""Every import of the package points to its own layer or one above it, in the order of
ARCHITECTURE.md's module map (imports inside functions included: they are dependencies
too)."""

import ast
import pathlib

PACKAGE = "speechbrain_w2vbert_sv"
ROOT = pathlib.Path(__file__).resolve().parents[2] / PACKAGE

# ARCHITECTURE.md's module map, top first: a module may import from its own row or the
# rows above it. `utils` and `experiment` sit beside everything (anyone may import them).
LAYERS = [
    {"utils", "experiment"},
    {"scoring"},
    {"data"},
    {"lobes"},
    {"training"},
    {"pruning"},
    {"inference"},
    {"applications"},
    {"cli", "sizes"},
    {"legacy_paths", "__init__"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}

# Known upward imports, each with the reason it is allowed.
ALLOWED = {
    # Convenience methods of the pretrained interface (``diarize``, ``enroll``, ...) that
    # hand over to the application layer, imported inside the method.
    ("inference.interface", "applications"): "interface methods of the application layer",
}


def module_name(path):
    """``lobes/heads.py`` -> ``lobes.heads``; ``pruning/__init__.py`` -> ``pruning``."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def layer(name):
    """The map row of a module (its folder, or the top-level module itself)."""
    return RANK[name.split(".")[0]]


def imported_modules(path):
    """The package modules a file imports (relative imports resolved, ``from package
    import module`` read as the module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".") if package else []
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([PACKAGE, *anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            if target.startswith(PACKAGE + "."):
                inner = target[len(PACKAGE) + 1 :]
                module = inner
                while module and not _exists(module):
                    module = module.rpartition(".")[0]
                if module:
                    found.add(module)
    return found


def _exists(module):
    path = ROOT.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def test_every_module_has_a_layer():
    unplaced = sorted(
        {module_name(p).split(".")[0] for p in ROOT.rglob("*.py")} - set(RANK),
    )
    assert not unplaced, f"add these to ARCHITECTURE.md's module map and LAYERS: {unplaced}"


def test_imports_point_down_the_layers():
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        name = module_name(path)
        for target in imported_modules(path):
            allowed = ALLOWED.get((name, target.split(".")[0]))
            if layer(target) > layer(name) and not allowed:
                upward.append(f"{name} -> {target}")
    assert not upward, "imports up the layers of ARCHITECTURE.md: " + ", ".join(upward)


def test_the_parser_finds_every_kind_of_import():
    """The parser finds absolute, relative and ``from package import module`` imports."""
    assert imported_modules(ROOT / "lobes" / "heads.py") == {"utils"}
    assert imported_modules(ROOT / "pruning" / "gated.py") >= {
        "pruning.counting",  # relative
        "lobes.pruned_w2vbert",  # absolute
    }
    assert "scoring" in imported_modules(ROOT / "inference" / "verification.py")
    assert layer("lobes.heads") < layer("pruning.gated") < layer("inference.interface")
