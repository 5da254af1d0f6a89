"""Webhook delivery for ``videokit serve``: a job's final status, POSTed like RunPod does.

RunPod retries a failed delivery twice, 10 s apart (shared/notes/runpod.md). Only the host is
logged: webhook URLs often carry a token in their query string.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

__all__ = ["WEBHOOK_ATTEMPTS", "WEBHOOK_RETRY_DELAY_S", "WEBHOOK_TIMEOUT_S", "Webhooks"]

log = logging.getLogger("videokit.serve")

WEBHOOK_ATTEMPTS = 3
WEBHOOK_RETRY_DELAY_S = 10.0
WEBHOOK_TIMEOUT_S = 10.0


class Webhooks:
    """Delivers status objects; its HTTP client is created on first use."""

    def __init__(self) -> None:
        # Most servers never see a webhook, and a client costs an SSL context.
        self._http: httpx.AsyncClient | None = None

    async def deliver(self, url: str, body: dict[str, Any]) -> None:
        """POST ``body`` to ``url``, retrying like RunPod; failures are logged, never raised."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_S)
        host = httpx.URL(url).host
        for attempt in range(1, WEBHOOK_ATTEMPTS + 1):
            try:
                response = await self._http.post(url, json=body)
                if response.is_success:
                    log.info("job %s webhook delivered host=%s", body["id"], host)
                    return
                reason = f"HTTP {response.status_code}"
            except httpx.HTTPError as err:
                reason = type(err).__name__
            log.warning(
                "job %s webhook failed host=%s attempt=%d reason=%s",
                body["id"],
                host,
                attempt,
                reason,
            )
            if attempt < WEBHOOK_ATTEMPTS:
                await asyncio.sleep(WEBHOOK_RETRY_DELAY_S)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
