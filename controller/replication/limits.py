"""Bandwidth limits for replication: a token bucket per dataset and destination.

:class:`TokenBucket` is pure arithmetic (time is an argument); :class:`BandwidthLimit`
wraps it around a byte stream with an injectable clock and sleep.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    """``rate`` tokens (bytes) per second, at most ``burst`` saved up.

    A taker may overdraw: it takes what it sends and waits until the bucket is out of
    debt, so chunks larger than the burst still pass, at the rate.
    """

    rate: float
    burst: float
    tokens: float = field(init=False)
    stamp: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.tokens = self.burst

    def take(self, amount: int, now: float) -> float:
        """Take ``amount`` tokens at ``now``; the seconds to wait before using them."""
        if self.stamp is not None and now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now if self.stamp is None else max(now, self.stamp)
        self.tokens -= amount
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class BandwidthLimit:
    """Paces byte streams so that together they stay under ``rate`` bytes per second."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.bucket = TokenBucket(rate, burst=max(rate, 64 * 1024))
        self._clock = clock
        self._sleep = sleep

    async def acquire(self, amount: int) -> None:
        wait = self.bucket.take(amount, self._clock())
        if wait > 0:
            await self._sleep(wait)

    async def paced(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            await self.acquire(len(chunk))
            yield chunk
