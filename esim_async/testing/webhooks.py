"""The emulator's outgoing webhooks: the simulator's documented payloads and async orders,
signed the way Airalo signs them, POSTed to loopback URLs only.

The signature is computed here from the provider's documentation (``airalo-signature``: hex
HMAC-SHA512 of the payload keyed with the client secret), not borrowed from the client, so a
receiver that verifies wrongly fails against the emulator.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from .state import EmulatorState

__all__ = ["LOW_DATA_LEVELS", "SIGNATURE_HEADER", "WebhookSender", "is_loopback_url", "sign"]

SIGNATURE_HEADER = "airalo-signature"
#: The simulator's low-data ``type`` -> the ``level`` its notification reports.
LOW_DATA_LEVELS = {"data_75": "75%", "data_90": "90%", "expire_1": "1days", "expire_3": "3days"}


def sign(payload: bytes, secret: str) -> str:
    """Hex HMAC-SHA512 of ``payload`` keyed with ``secret``."""
    return hmac.new(secret.encode(), payload, hashlib.sha512).hexdigest()


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
    """Signs and POSTs notifications, recording each attempt in ``state.deliveries``."""

    __slots__ = ("state",)

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    def secret_for(self, request: web.Request | None) -> str:
        """The signing secret: the configured one, else that of the requesting client."""
        state = self.state
        if state.webhook_secret:
            return state.webhook_secret
        if request is not None:
            token = request.headers.get("Authorization", "")[7:]
            secret = state.token_secret(token)
            if secret is not None:
                return secret
        return "emulator-secret"

    def encode(self, payload: dict[str, Any], secret: str) -> tuple[bytes, str]:
        """The body to send and its signature.

        By default the signature covers the bytes sent; with ``state.sign_canonical`` the body
        is indented and the signature covers the compact, slash-escaped re-encoding instead.
        """
        if self.state.sign_canonical:
            body = json.dumps(payload, indent=1).encode()
            canonical = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
            return body, sign(canonical.replace("/", "\\/").encode(), secret)
        body = json.dumps(payload, separators=(",", ":")).encode()
        return body, sign(body, secret)

    async def post(self, url: str, payload: dict[str, Any], secret: str) -> int | None:
        """POST a signed notification; returns the status, or None when it could not be sent.

        A redirect is not followed (its 3xx status is the answer): the emulator posts to
        loopback URLs only.
        """
        if not is_loopback_url(url):
            return None
        body, signature = self.encode(payload, secret)
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s,
                s.post(
                    url,
                    data=body,
                    headers={"Content-Type": "application/json", SIGNATURE_HEADER: signature},
                    allow_redirects=False,
                ) as resp,
            ):
                status = resp.status
        except (aiohttp.ClientError, TimeoutError):
            status = None
        self.state.deliveries.append({"url": url, "payload": payload, "status": status})
        return status

    @staticmethod
    def simulated_payload(event: dict[str, Any]) -> dict[str, Any]:
        """The documented notification a simulator request for ``event`` sends."""
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
        """Send a simulated notification now; the simulator's 400 if it could not be pushed."""
        url = str(event["webhook_url"])
        status = await self.post(url, self.simulated_payload(event), self.secret_for(request))
        if status is None or status >= 300:
            return web.json_response({"error": f"Could not push data to {url}"}, status=400)
        return None

    def schedule(self, url: str, payload: dict[str, Any], secret: str, delay: float) -> None:
        """POST ``payload`` to ``url`` ``delay`` seconds from now, in the background."""

        async def later() -> None:
            await asyncio.sleep(delay)
            await self.post(url, payload, secret)

        task = asyncio.get_running_loop().create_task(later())
        background = self.state.background
        background.add(task)
        task.add_done_callback(background.discard)
