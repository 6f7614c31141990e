"""No module of the package reads another object's private attributes.

Each object keeps its own ``_name`` attributes to itself: ``self._x`` and ``cls._x`` are fine,
``other._x`` is not, nor is ``getattr(other, "_x")``, nor ``from .module import _x`` (a
module whose own name starts with ``_`` is package-internal and may be imported; its private
names may not). What crosses between modules goes through public names.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "esim_async"

#: Receivers that are the object itself.
_SELF_NAMES = frozenset({"self", "cls", "mcs"})

#: ``(path relative to the package, or "*" for any, name)`` pairs allowed, each with its reason.
ALLOWED: dict[tuple[str, str], str] = {
    # The public API of every namedtuple is spelled with a leading underscore.
    ("*", "_replace"): "namedtuple API",
    ("*", "_asdict"): "namedtuple API",
    ("*", "_fields"): "namedtuple API",
    # Enum's documented way to build a pseudo-member in ``_missing_``.
    ("models/usage.py", "_name_"): "enum pseudo-member built in _missing_",
    ("models/usage.py", "_value_"): "enum pseudo-member built in _missing_",
    # aiohttp has no public switch for its own re-send of an idempotent request when a pooled
    # connection drops (its own test utilities set this attribute), nor a getter for a
    # session's middlewares (read to append the pipeline's after the caller's).
    ("transport.py", "_retry_connection"): "aiohttp: no public switch for its re-send",
    ("transport.py", "_middlewares"): "aiohttp: no public getter for a session's middlewares",
    # The documented way to end a process at once, from a signal handler, without unwinding.
    ("cli.py", "_exit"): "os._exit: the documented immediate exit",
}

#: Paths (a file, or a folder ending in ``/``) being rebuilt by other work in progress: their
#: findings are listed as a skip instead of a failure until that work lands.
#: Paths still being reworked, skipped with a reason (none at the moment).
PENDING: dict[str, str] = {}

#: Functions that read an attribute named by a string.
_GETTERS = frozenset({"getattr", "setattr", "hasattr", "delattr"})


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_self(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id in _SELF_NAMES
    # super()._x reads this object's own (inherited) attribute.
    return (
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"
    )


def _is_module(path: Path, level: int, module: str | None, name: str) -> bool:
    """Whether ``from <level dots><module> import <name>`` in ``path`` names a submodule."""
    base = path.parent
    for _ in range(max(0, level - 1)):
        base = base.parent
    if level == 0:
        if not module or not module.startswith("esim_async"):
            return False
        base = PACKAGE.parent
    for part in (module or "").split(".") if module else ():
        base = base / part
    return (base / f"{name}.py").exists() or (base / name / "__init__.py").exists()


def private_reads(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """``(line, text)`` of each read of another object's private name in ``path``."""
    rel = path.relative_to(PACKAGE).as_posix() if path.is_relative_to(PACKAGE) else path.name
    tree = ast.parse(source if source is not None else path.read_text(encoding="utf-8"))
    found: list[tuple[int, str]] = []

    # A private name this module defines (``self._x = ...``, ``def _x``, a class attribute) is
    # the module's own business: one of its classes may use another's. Reading a private name
    # that only another module defines is what the rule forbids.
    own: set[str] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and _is_self(node.value)
        ):
            own.add(node.attr)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            own.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            own.add(node.target.id)

    def allowed(attr: str) -> bool:
        return (rel, attr) in ALLOWED or ("*", attr) in ALLOWED

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            if (
                _private(node.attr)
                and not _is_self(node.value)
                and node.attr not in own
                and not allowed(node.attr)
            ):
                found.append((node.lineno, f"{ast.unparse(node.value)}.{node.attr}"))
        elif isinstance(node, ast.Call):
            func = node.func
            if (
                isinstance(func, ast.Name)
                and func.id in _GETTERS
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
                and _private(node.args[1].value)
                and not _is_self(node.args[0])
                and not allowed(node.args[1].value)
            ):
                found.append(
                    (node.lineno, f"{func.id}({ast.unparse(node.args[0])}, {node.args[1].value!r})")
                )
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (
                    _private(alias.name)
                    and not _is_module(path, node.level, node.module, alias.name)
                    and not allowed(alias.name)
                ):
                    dots = "." * node.level
                    found.append(
                        (node.lineno, f"from {dots}{node.module or ''} import {alias.name}")
                    )
    return sorted(found)


def _scan() -> dict[str, list[str]]:
    offenders: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for line, text in private_reads(path):
            offenders.setdefault(rel, []).append(f"esim_async/{rel}:{line}: {text}")
    return offenders


def _pending(rel: str) -> str | None:
    for prefix, reason in PENDING.items():
        if rel == prefix or (prefix.endswith("/") and rel.startswith(prefix)):
            return reason
    return None


def test_the_scan_finds_every_spelling(tmp_path: Path) -> None:
    source = (
        "from .cache import _helper, CacheEntry\n"
        "from . import _constants\n"
        "class A:\n"
        "    def f(self, other):\n"
        "        self._ok = 1\n"
        "        super()._ok2()\n"
        "        other._bad = 2\n"
        "        x = self._client._transport\n"
        "        y = getattr(other, '_hidden', None)\n"
        "        z = getattr(self, '_mine', None)\n"
        "        return self.__dict__, other.__class__, t._replace(a=1)\n"
    )
    lines = [line for line, _ in private_reads(PACKAGE / "client.py", source)]
    assert lines == [1, 7, 8, 9]


def test_no_module_reads_another_objects_private_attributes() -> None:
    offenders = [line for rel, lines in _scan().items() if _pending(rel) is None for line in lines]
    assert offenders == [], "use a public name instead:\n" + "\n".join(offenders)
