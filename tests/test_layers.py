"""The package's layering (docs/design.md, "Layers"), read from every module's imports."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "recsys_jax"

# Which layers each layer may import (besides itself and the shared top-level modules).
ALLOWED = {
    "data": set(),
    "models": {"data", "training"},  # training: only training.tables (MODELS_MAY_IMPORT)
    "training": {"data"},
    "evaluation": {"data", "models"},  # models: only the contract's protocols
    "retrieval": {"data", "models"},  # models: only the contract's protocols
    "analysis": {"data"},
    "tasks": {"data", "models", "training", "evaluation", "retrieval", "analysis"},
}
SHARED = {"fileio", "progress", "console", "config_files"}
# The one engine module models may import: the declaration of their embedding tables.
MODELS_MAY_IMPORT = {"recsys_jax.training.tables"}


def imported_layers(path: Path) -> set[str]:
    """The ``recsys_jax.<layer>`` names a module imports, wherever the import statement is."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] == "recsys_jax":
                if len(parts) > 1:
                    names.add(parts[1])
                else:  # from recsys_jax import fileio
                    names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "recsys_jax" and len(parts) > 1:
                    names.add(parts[1])
    return names


def test_every_layer_imports_only_the_layers_below_it():
    violations = []
    for layer, allowed in ALLOWED.items():
        for path in sorted((PACKAGE / layer).rglob("*.py")):
            extra = imported_layers(path) - allowed - SHARED - {layer}
            if extra:
                violations.append(f"{path.relative_to(PACKAGE)} imports {sorted(extra)}")
    assert violations == []


def imported_modules(path: Path, layer: str) -> set[str]:
    """The ``recsys_jax.<layer>...`` modules a module imports (``from`` imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n.startswith(f"recsys_jax.{layer}")}


def test_models_import_only_the_table_declaration_from_the_engine():
    for path in sorted((PACKAGE / "models").rglob("*.py")):
        assert imported_modules(path, "training") <= MODELS_MAY_IMPORT, path


def test_every_layer_is_listed():
    layers = {p.name for p in PACKAGE.iterdir() if p.is_dir() and any(p.glob("*.py"))}
    assert layers == set(ALLOWED)


def test_the_library_never_imports_torch_or_the_entry_points():
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert not roots & {"torch", "experiments", "benchmarks", "tests"}, path


def test_the_checker_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from recsys_jax.tasks import runner\n"
                      "from recsys_jax import fileio\n")
    assert imported_layers(module) == {"tasks", "fileio"}
