"""compkit's structure: no import cycles, stages sit on the engine (never the other way round), no module reaches
into another's underscore names, and no stage names a model family or a dataset format."""

from __future__ import annotations

import ast
from pathlib import Path

import compkit

PACKAGE = Path(compkit.__file__).parent
# One module per subcommand in compkit/stages/, named as the subcommand; `cli` parses and delegates, `demo` runs the
# other stages in a row, `bundle` packs what `weights export` and `export run` write, `tune` trains (and ensembles)
# its trials as runs.
STAGES = {f"compkit.stages.{p.stem}" for p in (PACKAGE / "stages").glob("*.py") if p.stem != "__init__"}
ORCHESTRATORS = {
    "compkit.cli",
    "compkit.stages.demo",
    "compkit.stages.bundle",
    "compkit.stages.tune",
    "compkit.__main__",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(encoding="utf-8")) for p in PACKAGE.rglob("*.py")}


def imports(name: str, tree: ast.Module, known: set[str]) -> list[tuple[str, list[str]]]:
    """(imported compkit module, names taken from it) for every import anywhere in the module, functions included."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.startswith("compkit")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative imports
                package = name.split(".")[: -node.level] if not name.endswith("__init__") else name.split(".")
                base = ".".join(package + ([base] if base else []))
            if not base.startswith("compkit"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub, []) if sub in known else (base, [alias.name]))
    return [(target, names) for target, names in found if target in known]


def graph() -> dict[str, set[str]]:
    trees = modules()
    known = set(trees)
    return {
        name: {target for target, _ in imports(name, tree, known) if target != name} for name, tree in trees.items()
    }


def test_every_subcommand_is_a_stage_module_and_every_stage_a_subcommand():
    import typer.main

    from compkit.cli import app

    group = typer.main.get_command(app)
    commands = {f"compkit.stages.{name.replace('-', '_')}" for name in group.commands}
    assert commands == STAGES, (
        f"subcommands without a stage module: {sorted(commands - STAGES)}; stage modules without a subcommand: {sorted(STAGES - commands)}"
    )


def test_the_package_root_holds_only_the_entry_points():
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert loose == ["__init__.py", "__main__.py", "cli.py"], (
        f"modules outside a folder: {loose}: put each in the stage or engine folder it serves"
    )


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_the_engine_never_imports_a_stage():
    for module, targets in graph().items():
        if module in ORCHESTRATORS:
            continue
        bad = sorted(t for t in targets if t in STAGES)
        assert not bad, f"{module} imports the stage(s) {bad}: move what they share into an engine module"


def test_no_module_takes_another_modules_private_names():
    trees = modules()
    known = set(trees)
    for name, tree in trees.items():
        for target, names in imports(name, tree, known):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if target.startswith(name + ".") or not private:  # a package may import its own submodules
                continue
            raise AssertionError(f"{name} imports private names {private} from {target}")


def test_no_stage_names_a_family_or_a_format():
    from compkit.data import DATASET_FORMATS
    from compkit.families import FAMILIES

    names = set(FAMILIES) | set(DATASET_FORMATS)
    for path in (PACKAGE / "stages").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                for value in [node.left, *node.comparators]:
                    if isinstance(value, ast.Constant) and value.value in names:
                        raise AssertionError(
                            f"{path.name}:{node.lineno} compares with {value.value!r}: ask the family or format instead"
                        )
