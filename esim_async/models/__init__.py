"""Typed response models (msgspec Structs), tolerant of what the providers send."""

from ._base import Envelope, Meta, Model, Pricing
from .auth import Token
from .catalog import Country, Image, Operator, Package, Prices, ProductInformation
from .orders import AsyncOrder, Order, OrderSim, OrderStatus, OrderUser
from .pagination import Page
from .sims import Esim, InstallationStep, Instructions, PackageHistoryEntry, TopupPackage
from .usage import Usage, UsageStatus

__all__ = [
    "AsyncOrder",
    "Country",
    "Envelope",
    "Esim",
    "Image",
    "InstallationStep",
    "Instructions",
    "Meta",
    "Model",
    "Operator",
    "Order",
    "OrderSim",
    "OrderStatus",
    "OrderUser",
    "Package",
    "PackageHistoryEntry",
    "Page",
    "Prices",
    "Pricing",
    "ProductInformation",
    "Token",
    "TopupPackage",
    "Usage",
    "UsageStatus",
]
