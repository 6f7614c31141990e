"""The emulator stands on its own: it takes nothing from the client but public models and ``Rate``,
and its modules use each other's public names only.

An emulator that borrowed the client's constants, validation or error types would agree with the
client's mistakes instead of catching them; so every module under ``esim_async/testing`` is parsed
and its imports checked. The refund reasons it accepts are the provider's documented list.
"""

from __future__ import annotations

import ast
from pathlib import Path

import aiohttp
import pytest

from esim_async.testing import Emulator, Fleet, ServerLimits

PACKAGE = "esim_async"
TESTING = "esim_async.testing"
ROOT = Path(__file__).resolve().parents[2] / "esim_async" / "testing"

#: ``POST /v2/refund`` reasons, as the API reference lists them.
DOCUMENTED_REFUND_REASONS = [
    "INSTALLATION_FAILURE",
    "NO_COVERAGE",
    "APN_FAILURE",
    "TRIP_CANCELLATION",
    "INTERMITTENT_CONNECTION",
    "BLOCKED_NETWORK",
    "CHANGE_OF_PLAN",
    "DELETED_ESIM",
    "EARLY_EXPIRY",
    "HOTSPOT_NOT_WORKING",
    "IMSI_CHANGE",
    "INCOMPATIBLE_DEVICE",
    "LOCKED_DEVICE",
    "NO_VOICE_TEXT_SERVICES",
    "OVERCHARGED",
    "SLOW_SPEED",
    "TOP_UP_PACKAGE_FAILURE",
    "UNKNOWN_CHARGES",
    "WRONG_PURCHASE",
    "UNABLE_TO_ACCESS_APPS",
    "SERVICE_DEGRADATION",
    "QR_ISSUE_PARTNERS",
    "OTHERS",
]


def module_name(path: Path) -> str:
    """The dotted name of a module file under ``esim_async/testing``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([TESTING, *parts])


def resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module an ``ImportFrom`` names (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base.pop()
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def allowed_from_client(target: str, names: list[str]) -> bool:
    """Whether ``from target import names`` takes only what the emulator may take."""
    if target == "esim_async.models" or target.startswith("esim_async.models."):
        return not any(is_private(p) for p in target.split(".")) and not any(
            is_private(n) or n == "*" for n in names
        )
    if target in ("esim_async", "esim_async.limits"):
        return bool(names) and all(n == "Rate" for n in names)
    return False


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """Every import in ``source`` (the text of ``module``) that breaks the rules."""
    found: list[str] = []
    tree = ast.parse(source)
    testing_aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = alias.name
                if target.startswith(TESTING):
                    testing_aliases.add((alias.asname or target).split(".")[0])
                elif target == PACKAGE or target.startswith(PACKAGE + "."):
                    found.append(f"{module}: import {target}")
        elif isinstance(node, ast.ImportFrom):
            target = resolve(node, module, is_package)
            names = [a.name for a in node.names]
            if target == TESTING or target.startswith(TESTING + "."):
                for alias in node.names:
                    if is_private(alias.name):
                        found.append(f"{module}: from {target} import {alias.name}")
                    else:
                        testing_aliases.add(alias.asname or alias.name)
            elif (
                target == PACKAGE or target.startswith(PACKAGE + ".")
            ) and not allowed_from_client(target, names):
                found.append(f"{module}: from {target} import {', '.join(names)}")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in testing_aliases
            and is_private(node.attr)
        ):
            found.append(f"{module}: {node.value.id}.{node.attr}")
    return found


def test_the_checker_flags_what_it_should() -> None:
    module = "esim_async.testing.routes.account"
    assert violations("from ...resources.refunds import REASONS", module) == [
        "esim_async.testing.routes.account: from esim_async.resources.refunds import REASONS"
    ]
    assert violations("from ..http import _invalid", module) == [
        "esim_async.testing.routes.account: from esim_async.testing.http import _invalid"
    ]
    assert violations("from .. import http\nhttp._invalid({})", module) == [
        "esim_async.testing.routes.account: http._invalid"
    ]
    for bad in (
        "from esim_async._constants import USAGE",
        "from esim_async.errors import ValidationError",
        "from esim_async.validation import validate_iccid",
        "from esim_async.clock import Clock",
        "from esim_async.webhooks import sign",
        "from esim_async import AiraloClient",
        "from esim_async.models._base import Envelope",
        "import esim_async.limits",
    ):
        assert violations(bad, module), bad
    for good in (
        "from ... import Rate",
        "from esim_async.limits import Rate",
        "from esim_async.models.usage import Usage",
        "from ..state import EmulatorState",
        "from __future__ import annotations",
        "from aiohttp import web",
    ):
        assert violations(good, module) == [], good


def test_the_emulator_imports_only_public_models_and_rate_from_the_client() -> None:
    files = sorted(ROOT.rglob("*.py"))
    assert files
    found = [
        v
        for path in files
        for v in violations(
            path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py"
        )
    ]
    assert found == []


@pytest.mark.parametrize("reason", [*DOCUMENTED_REFUND_REASONS, "NOT_A_REASON", "no_coverage"])
async def test_refund_reasons_are_the_documented_ones(reason: str) -> None:
    fleet = Fleet.generate(2, seed=3)
    limits = ServerLimits.unlimited()
    limits.refund = None
    async with Emulator(fleet=fleet, limits=limits) as emu, aiohttp.ClientSession() as http:
        async with http.post(
            emu.url + "/v2/token",
            data={"client_id": "id", "client_secret": "s", "grant_type": "client_credentials"},
        ) as resp:
            token = (await resp.json())["data"]["access_token"]
        form = aiohttp.FormData()
        form.add_field("iccids[]", fleet.iccids()[0])
        form.add_field("reason", reason)
        form.add_field("notes", "n")
        async with http.post(
            emu.url + "/v2/refund", data=form, headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            status = resp.status
    assert status == (202 if reason in DOCUMENTED_REFUND_REASONS else 422)
    assert len(emu.refunds) == (1 if status == 202 else 0)
