"""eSIM details, available top-ups, package history and installation instructions."""

from __future__ import annotations

from datetime import datetime

import msgspec

from ._base import Model, to_utc
from .catalog import Package
from .orders import Order, OrderSim, Sharing

__all__ = [
    "Esim",
    "InstallationStep",
    "Instructions",
    "PackageHistoryEntry",
    "TopupPackage",
]


class Esim(OrderSim, kw_only=True):
    """An eSIM (``GET /sims/{iccid}`` or an item of ``GET /sims``): the fields an order's eSIM
    has, plus its brand, voucher code and recycling state.

    The order it came from is under ``simable`` when included (the API's name), also reachable
    as :attr:`order`.
    """

    iccid: str  # required here (keyword-only fields allow it)
    voucher_code: str | None = None
    brand_settings_name: str | None = None
    recycled: bool | None = None
    recycled_at: datetime | None = None
    simable: Order | None = None
    sharing: Sharing | None = None

    def __post_init__(self) -> None:
        to_utc(self, "created_at", "recycled_at")

    @property
    def order(self) -> Order | None:
        """The order this eSIM came from (``simable``), when included."""
        return self.simable


#: A top-up that can be bought for one eSIM (``GET /sims/{iccid}/topups``): a catalogue
#: package with ``type == "topup"``.
TopupPackage = Package


class HistoryPackage(Package):
    """The package of a package-history entry (its ``id`` may be missing)."""

    id: str | None = None  # type: ignore[assignment]


class PackageHistoryEntry(Model):
    """One package or top-up an eSIM had (``GET /sims/{iccid}/packages``); ``remaining`` in MB
    (0 for unlimited packages)."""

    id: int | None = None
    status: str | None = None
    remaining: int | None = None
    activated_at: datetime | None = None
    expired_at: datetime | None = None
    finished_at: datetime | None = None
    package: HistoryPackage | None = None

    def __post_init__(self) -> None:
        to_utc(self, "activated_at", "expired_at", "finished_at")


class InstallationStep(Model):
    """A block of numbered steps (``steps`` maps "1".."n" to text) plus its extra fields."""

    steps: dict[str, str] = msgspec.field(default_factory=dict)
    qr_code_data: str | None = None
    qr_code_url: str | None = None
    direct_apple_installation_url: str | None = None
    smdp_address_and_activation_code: str | None = None
    apn_type: str | None = None
    apn_value: str | None = None
    is_roaming: bool | None = None

    def ordered_steps(self) -> list[str]:
        """The steps in order."""
        return [self.steps[k] for k in sorted(self.steps, key=lambda k: (len(k), k))]


class DeviceInstructions(Model):
    model: str | None = None
    version: str | None = None
    installation_via_qr_code: InstallationStep | None = None
    installation_manual: InstallationStep | None = None
    network_setup: InstallationStep | None = None


class Instructions(Model):
    """Installation instructions for iOS and Android in one language."""

    language: str | None = None
    ios: list[DeviceInstructions] = msgspec.field(default_factory=list)
    android: list[DeviceInstructions] = msgspec.field(default_factory=list)


class InstructionsData(Model):
    instructions: Instructions
