"""The emulator's outgoing webhooks: the simulator's documented payloads and async orders,
signed like Airalo signs them, POSTed to loopback URLs only."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from ..webhooks import SIGNATURE_HEADER, sign

__all__ = ["WebhookSender", "is_loopback_url"]

LOW_DATA_LEVELS = {"data_75": "75%", "data_90": "90%", "expire_1": "1days", "expire_3": "3days"}


def is_loopback_url(url: str) -> bool:
    """True for http(s) URLs on 127.0.0.0/8, ::1 or localhost (the emulator posts nowhere else)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


class WebhookSender:
    """Mixed into the Emulator: signs and POSTs notifications."""

    webhook_secret: str | None
    #: Sign the compact, slash-escaped re-encoding instead of the bytes sent (the other
    #: reading of the docs), to exercise receivers' fallback.
    sign_canonical: bool
    deliveries: list[dict[str, Any]]
    _token_owner: dict[str, tuple[str, str]]
    _background: set[asyncio.Task[None]]

    def _secret_for(self, request: web.Request | None) -> str:
        if self.webhook_secret:
            return self.webhook_secret
        if request is not None:
            token = request.headers.get("Authorization", "")[7:]
            owner = self._token_owner.get(token)
            if owner is not None:
                return owner[1]
        return "emulator-secret"

    def _encode(self, payload: dict[str, Any], secret: str) -> tuple[bytes, str]:
        if self.sign_canonical:
            body = json.dumps(payload, indent=1).encode()
            canonical = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
            return body, sign(canonical.replace("/", "\\/").encode(), secret)
        body = json.dumps(payload, separators=(",", ":")).encode()
        return body, sign(body, secret)

    async def post_webhook(self, url: str, payload: dict[str, Any], secret: str) -> int | None:
        """POST a signed notification; returns the status, or None when it could not be sent."""
        if not is_loopback_url(url):
            return None
        body, signature = self._encode(payload, secret)
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s,
                s.post(
                    url,
                    data=body,
                    headers={"Content-Type": "application/json", SIGNATURE_HEADER: signature},
                ) as resp,
            ):
                status = resp.status
        except (aiohttp.ClientError, TimeoutError):
            status = None
        self.deliveries.append({"url": url, "payload": payload, "status": status})
        return status

    def simulated_payload(self, event: dict[str, Any]) -> dict[str, Any]:
        kind = event.get("event")
        if kind == "low_data_notification":
            level = LOW_DATA_LEVELS.get(str(event.get("type")), "75%")
            remaining = {"75%": 25, "90%": 10}.get(level, 43)
            return {
                "level": level,
                "package_name": "bonbon-7gb-10days",
                "remaining_percentage": remaining,
                "iccid": event.get("iccid") or "87123123456889019",
            }
        if kind == "credit_limit_notification":
            return {
                "message": f"Surpassed {event.get('level', 80)}% of the credit limit balance",
                "remaining": 225.35,
            }
        return {
            "data": {
                "request_id": "SIMULATED0000000000000000",
                "id": 1,
                "code": "20260101-000001",
                "package_id": "change-7days-1gb",
                "quantity": 1,
                "type": "sim",
                "sims": [],
            },
            "meta": {"message": "success"},
        }

    async def deliver_simulated(
        self, event: dict[str, Any], request: web.Request | None
    ) -> web.Response | None:
        url = str(event["webhook_url"])
        status = await self.post_webhook(
            url, self.simulated_payload(event), self._secret_for(request)
        )
        if status is None or status >= 300:
            return web.json_response({"error": f"Could not push data to {url}"}, status=400)
        return None

    def schedule_async_order(
        self, url: str, payload: dict[str, Any], secret: str, delay: float
    ) -> None:
        async def later() -> None:
            await asyncio.sleep(delay)
            await self.post_webhook(url, payload, secret)

        task = asyncio.get_running_loop().create_task(later())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
