"""``client.packages``: the catalogue."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal, get_args

from ..models.catalog import Country, ProductInformation
from ..models.pagination import Page
from ..validation import validate_choice, validate_country, validate_language, validate_slug
from ._base import Resource, optional

__all__ = ["AiraloPackagesResource", "PackagesResource"]

PackageType = Literal["local", "global"]
_PACKAGE_TYPES: tuple[str, ...] = get_args(PackageType)


class PackagesResource(Resource):
    """The package catalogue: countries and regions with their operators and packages."""

    __slots__ = ()

    def _params(
        self, type: str | None, country: str | None, include_topup: bool
    ) -> dict[str, str | None]:
        return {
            "filter[type]": optional(validate_choice, type, _PACKAGE_TYPES, field="type"),
            "filter[country]": optional(validate_country, country),
            "include": "topup" if include_topup else None,
        }

    async def list(
        self,
        type: PackageType | None = None,
        country: str | None = None,
        include_topup: bool = False,
        language: str | None = None,
        *,
        page_size: int | None = None,
        max_items: int | None = None,
    ) -> AsyncIterator[Country]:
        """Every catalogue entry of every page (an async iterator).

        Args:
            type: ``"local"`` (country packages) or ``"global"`` (global and regional).
            country: ISO 3166-1 alpha-2 code, e.g. ``"US"``.
            include_topup: include top-up packages (``type == "topup"``) beside sim packages.
            language: ``Accept-Language`` for translated titles, e.g. ``"de"``.
            page_size: entries per page (``limit``).
            max_items: stop after this many entries.

        Example::

            async for country in client.packages.list(country="FR"):
                for package in country.packages():
                    print(package.id, package.price)
        """
        params = self._params(type, country, include_topup)
        optional(validate_language, language)
        async for item in self._paginate(
            "packages",
            Country,
            params=params,
            page_size=page_size,
            max_items=max_items,
            language=language,
        ):
            yield item

    async def page(
        self,
        page: int = 1,
        type: PackageType | None = None,
        country: str | None = None,
        include_topup: bool = False,
        language: str | None = None,
        *,
        page_size: int | None = None,
    ) -> Page[Country]:
        """One page of the catalogue with its metadata (``last_page``, ``total``...)."""
        optional(validate_language, language)
        return await self._page(
            "packages",
            Country,
            page,
            params=self._params(type, country, include_topup),
            page_size=page_size,
            language=language,
        )


class AiraloPackagesResource(PackagesResource):
    """Airalo's catalogue, plus product information briefs."""

    __slots__ = ()

    async def product_information(self, slug: str) -> ProductInformation:
        """The product information brief (PIB) of package ``slug`` (60 per minute per package)."""
        slug = validate_slug(slug, field="slug")
        return await self._data(
            "product_information",
            ProductInformation,
            path_params={"slug": slug},
            key=slug,
        )
