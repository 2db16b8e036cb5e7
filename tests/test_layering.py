"""The import graph of op3d is one-way: every import inside op3d (module-level or inside a function) goes to the
importer's own unit or to a unit of a lower layer, as declared in LAYERS (the module map in docs/architecture.md)."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Bottom to top. A unit is a package or a module; a module belongs to the longest unit that names it or one of its
# packages ("op3d" itself is only the package facade, op3d/__init__.py). Units of one layer are independent: they
# may not import each other.
LAYERS = [
    ("op3d.atomic", "op3d.safe_pickle", "op3d.fast_paths", "op3d.distributed", "op3d.cameras"),
    ("op3d.primitives", "op3d.shapes", "op3d.smpl"),
    ("op3d.networks.ops", "op3d.networks.construction"),
    ("op3d.networks.layers",),
    ("op3d.representation", "op3d.datasets", "op3d.augmentation"),
    ("op3d.rendering",),
    ("op3d.networks", "op3d.data", "op3d.mesh_colors"),
    ("op3d.checkpoints",),
    ("op3d.generation", "op3d.generation_cond"),
    ("op3d.metrics", "op3d.video"),
    ("op3d.training",),
    ("op3d.viewer", "op3d.inversion", "op3d.scene_fitting"),
    ("op3d",),
]
LAYER_OF = {unit: index for index, layer in enumerate(LAYERS) for unit in layer}


def module_name(path: pathlib.Path, root: pathlib.Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def op3d_modules(root: pathlib.Path = ROOT) -> dict[str, pathlib.Path]:
    return {module_name(path, root): path for path in sorted((root / "op3d").rglob("*.py"))}


def unit_of(module: str) -> str | None:
    """The declared unit a module belongs to, or None."""
    if module == "op3d":
        return "op3d"
    parts = module.split(".")
    for end in range(len(parts), 1, -1):
        candidate = ".".join(parts[:end])
        if candidate in LAYER_OF and candidate != "op3d":
            return candidate
    return None


def op3d_imports(path: pathlib.Path, module: str, known: set[str]) -> list[tuple[int, str]]:
    """(line, imported op3d module) for every import statement in the file, at any depth. `from package import name`
    counts as importing package.name when that is a module."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.append((node.lineno, submodule if submodule in known else base))
    return [(line, target) for line, target in dict.fromkeys(found) if target == "op3d" or target.startswith("op3d.")]


def upward_imports(root: pathlib.Path = ROOT) -> list[str]:
    """One line per import that does not go to the importer's own unit or a lower layer."""
    modules = op3d_modules(root)
    offences = []
    for module, path in modules.items():
        source = unit_of(module)
        for line, target in op3d_imports(path, module, set(modules)):
            unit = unit_of(target)
            if unit == source or (unit is not None and LAYER_OF[unit] < LAYER_OF[source]):
                continue
            where = "an undeclared unit" if unit is None else f"{unit} (layer {LAYER_OF[unit]})"
            offences.append(f"{path.relative_to(root)}:{line}: {module} (unit {source}, layer {LAYER_OF[source]}) "
                            f"imports {target}, which is in {where}")
    return offences


def test_every_module_is_in_a_declared_unit():
    undeclared = [module for module in op3d_modules() if unit_of(module) is None]
    assert not undeclared, f"modules outside every unit of LAYERS (add them to a layer): {undeclared}"


def test_every_declared_unit_exists():
    modules = op3d_modules()
    missing = [unit for unit in LAYER_OF if not any(m == unit or m.startswith(unit + ".") for m in modules)]
    assert not missing, f"LAYERS names units that no longer exist: {missing}"


def test_imports_only_go_down_the_layers():
    offences = upward_imports()
    assert not offences, "imports against the layer order (docs/architecture.md, Module map):\n" + "\n".join(offences)


def test_checker_sees_function_level_relative_and_submodule_imports(tmp_path):
    package = tmp_path / "op3d"
    for folder in ("rendering", "training"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "cameras.py").write_text("")
    (package / "training" / "loop.py").write_text("def f():\n    from op3d import cameras\n")
    (package / "rendering" / "rays.py").write_text(
        "import op3d.cameras\n"
        "def f():\n    from ..training import loop\n"
        "class A:\n    def g(self):\n        from op3d.training.loop import f\n")
    offences = upward_imports(tmp_path)
    assert [o.split(": ")[0] for o in offences] == ["op3d/rendering/rays.py:3", "op3d/rendering/rays.py:6"]
    assert "imports op3d.training.loop, which is in op3d.training (layer 10)" in offences[0]
