"""The layer contracts of DESIGN.md §2, checked by reading every import of the package.

Counts `import x` and `from x import y` anywhere in a module: at the top, inside functions,
under `if TYPE_CHECKING:`, relative or absolute; and `importlib.import_module("x")` or
`__import__("x")` with the name written out. Run `python3 -m tests.support.layers` to
print each contract as KEPT or BROKEN (exit 1 when one is broken); tests/test_layers.py
runs the same check in the test command.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "mailbot"
LAYERS = ("mailbox", "intake", "rules", "cases", "pki", "outbox", "app", "cli")
LEAVES = ("config", "db", "clock", "findings", "refs", "faults")

# What each layer must not import (DESIGN.md §2, issue 8 item 1).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "pki": ("mailbox", "intake", "cases", "rules", "outbox", "app", "cli"),
    "mailbox": ("intake", "cases", "rules", "pki", "outbox", "app", "cli"),
    "intake": ("cases", "rules", "outbox", "app", "cli"),
    "rules": ("mailbox", "cases", "outbox", "app", "cli"),
    "cases": ("mailbox", "outbox", "app", "cli"),
    "outbox": ("mailbox", "intake", "cases", "rules", "pki", "app", "cli"),
    "app": ("cli",),
    "leaf": LAYERS,
}
WHY = {
    "pki": "the PKI stands alone",
    "mailbox": "transport knows no policy",
    "intake": "bytes -> facts, nothing more",
    "rules": "rules judge facts and a case view they are given",
    "cases": "cases know no transport",
    "outbox": "the outbox renders, queues and sends what app hands it",
    "app": "only cli is a CLI",
    "leaf": "leaf modules import no layer",
}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. mailbot.intake.ingest
    target: str  # what it imports, e.g. mailbot.cases.store
    line: int


def layer_of(module: str) -> str | None:
    """The layer a mailbot module belongs to ("leaf" for the small modules), else None."""
    parts = module.split(".")
    if parts[0] != "mailbot":
        return None
    if len(parts) == 1:
        return "leaf"  # mailbot/__init__.py: the version
    if parts[1] in LAYERS:
        return parts[1]
    if parts[1] in LEAVES:
        return "leaf"
    return None


def module_name(path: Path, package: Path = PACKAGE) -> str:
    """The dotted name of a module file of `package`."""
    rel = path.relative_to(package.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(package: Path = PACKAGE) -> Iterator[Import]:
    """Every import of every module under `package`, wherever it stands in the module."""
    for path in sorted(package.rglob("*.py")):
        module = module_name(path, package)
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(module, alias.name, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = module.split(".")
                    anchor = anchor if is_pkg else anchor[:-1]
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    # `from mailbot import x` may name a module x: count the deeper one.
                    yield Import(module, f"{base}.{alias.name}", node.lineno)
            elif isinstance(node, ast.Call) and _is_dynamic_import(node.func) and node.args \
                    and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                # importlib.import_module("mailbot.cases.store") hides an arrow just as well
                yield Import(module, node.args[0].value, node.lineno)


def _is_dynamic_import(func: ast.expr) -> bool:
    """`import_module(...)`, `importlib.import_module(...)` or `__import__(...)`."""
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return name in ("import_module", "__import__")


def violations(package: Path = PACKAGE) -> dict[str, list[str]]:
    """Per contract (the importing layer, and "cli-only" for imports of cli), what breaks it."""
    broken: dict[str, list[str]] = {name: [] for name in [*FORBIDDEN, "cli-only"]}
    for imp in imports(package):
        src = layer_of(imp.module)
        if src is None:
            continue
        target = imp.target
        dst = layer_of(target) if target.startswith("mailbot.") or target == "mailbot" else None
        if target == "mailbot.__version__":
            dst = "leaf"
        if dst is None or dst == src:
            continue
        where = f"{imp.module}:{imp.line} imports {target}"
        if dst in FORBIDDEN.get(src, ()):
            broken[src].append(where)
        if dst == "cli" and src != "cli":
            broken["cli-only"].append(where)
    return broken


def main() -> int:
    broken = violations()
    for name, found in broken.items():
        if name == "cli-only":
            title = "nothing but cli imports cli"
        else:
            title = f"{name} -> {', '.join(FORBIDDEN[name])} forbidden ({WHY[name]})"
        print(f"{'BROKEN' if found else 'KEPT  '}  {title}")
        for where in found:
            print(f"          {where}")
    kept = sum(1 for f in broken.values() if not f)
    print(f"\nContracts: {kept} kept, {len(broken) - kept} broken.")
    return 1 if kept < len(broken) else 0


if __name__ == "__main__":
    sys.exit(main())
