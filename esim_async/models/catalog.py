"""The package catalogue: countries and regions, operators, packages; product information."""

from __future__ import annotations

from datetime import datetime

import msgspec

from ._base import Model, to_utc

__all__ = [
    "Apn",
    "Country",
    "Coverage",
    "Image",
    "Operator",
    "Package",
    "Prices",
    "ProductInformation",
]

#: Amounts by currency code, e.g. ``{"USD": 4.0, "EUR": 3.44}``.
CurrencyAmounts = dict[str, float]


class Image(Model):
    url: str | None = None
    width: int | None = None
    height: int | None = None


class Prices(Model):
    """``net_price`` (what you pay; absent under discount pricing) and the recommended retail
    price, by currency."""

    net_price: CurrencyAmounts | None = None
    recommended_retail_price: CurrencyAmounts | None = None


class Package(Model):
    """A package (``type`` ``sim``) or a top-up (``type`` ``topup``).

    ``amount`` is in MB (0 for unlimited packages), ``day`` in days, ``voice`` in minutes and
    ``text`` in SMS. ``net_price`` is absent or null under discount pricing.
    """

    id: str
    type: str | None = None
    price: float | None = None
    net_price: float | None = None
    amount: int | None = None
    day: int | None = None
    is_unlimited: bool | None = None
    title: str | None = None
    data: str | None = None
    voice: int | None = None
    text: int | None = None
    short_info: str | None = None
    prices: Prices | None = None
    qr_installation: str | None = None
    manual_installation: str | None = None
    is_fair_usage_policy: bool | None = None
    fair_usage_policy: str | None = None


class Network(Model):
    name: str | None = None
    types: list[str] = msgspec.field(default_factory=list)


class Coverage(Model):
    name: str | None = None
    code: str | None = None
    networks: list[Network] = msgspec.field(default_factory=list)


class ApnSetting(Model):
    apn_type: str | None = None
    apn_value: str | None = None


class Apn(Model):
    ios: ApnSetting | None = None
    android: ApnSetting | None = None


class OperatorCountry(Model):
    country_code: str | None = None
    title: str | None = None
    image: Image | None = None


class Operator(Model):
    """An operator of a country or region, with its packages."""

    id: int
    title: str | None = None
    type: str | None = None
    plan_type: str | None = None
    is_roaming: bool | None = None
    rechargeability: bool | None = None
    packages: list[Package] = msgspec.field(default_factory=list)
    esim_type: str | None = None
    is_prepaid: bool | None = None
    apn_type: str | None = None
    apn_value: str | None = None
    apn: Apn | None = None
    info: list[str] = msgspec.field(default_factory=list)
    image: Image | None = None
    activation_policy: str | None = None
    is_kyc_verify: bool | None = None
    other_info: str | None = None
    warning: str | None = None
    coverages: list[Coverage] = msgspec.field(default_factory=list)
    countries: list[OperatorCountry] = msgspec.field(default_factory=list)
    #: Days after purchase within which the eSIM must be installed, or it is recycled.
    install_window_days: int | None = None
    #: Days after exhaustion or expiry within which a top-up must be bought.
    topup_grace_window_days: int | None = None


class Country(Model):
    """A country (``country_code`` set) or a region / global entry (``country_code`` empty)."""

    slug: str
    country_code: str | None = None
    title: str | None = None
    image: Image | None = None
    min_price: Prices | None = None
    operators: list[Operator] = msgspec.field(default_factory=list)

    def packages(self) -> list[Package]:
        """Every package of every operator of this entry."""
        return [p for op in self.operators for p in op.packages]


class ProductInformation(Model):
    """The product information brief (PIB) of one package.

    Several figures come as text (``data_allowance_mb`` is ``"Unbegrenzt"`` for unlimited
    packages in the documented example), so they are kept as the API sends them.
    """

    package_id: str
    product_name: str | None = None
    product_description: str | None = None
    date_marketed: str | None = None
    service_internet: bool | None = None
    service_telephony: bool | None = None
    service_sms: bool | None = None
    network_providers: list[str] = msgspec.field(default_factory=list)
    network_technologies: list[str] = msgspec.field(default_factory=list)
    data_allowance_mb: str | None = None
    data_allowance_display: str | None = None
    validity_days: int | None = None
    voice_minutes: int | None = None
    sms_included: int | None = None
    retail_price_eur: str | None = None
    max_download_speed_mbit: str | None = None
    max_upload_speed_mbit: str | None = None
    throttled_download_speed_mbit: str | None = None
    throttled_upload_speed_mbit: str | None = None
    throttle_threshold_mb: int | None = None
    is_unlimited: bool | None = None
    is_fair_usage_policy: bool | None = None
    fair_usage_policy: str | None = None
    out_of_bundle_rate_eur_per_mb: str | None = None
    activation_policy: str | None = None
    is_roaming: bool | None = None
    auto_renewal: str | None = None
    terms_url: str | None = None
    partner_brand_name: str | None = None
    partner_logo_url: str | None = None
    legal_entity_name: str | None = None
    legal_address: str | None = None
    pib_version: int | None = None
    pib_version_date: datetime | None = None
    version_hash: str | None = None
    pib_version_pdf_link: str | None = None

    def __post_init__(self) -> None:
        to_utc(self, "pib_version_date")
