"""The venue's update stream: every update the paper venue tells its listeners, fanned out to WebSocket followers.

Each update gets the next position on this process's stream. A follower that falls `backlog` updates behind is
dropped (its socket closed with 1013): it reconnects with its fill cursor and replays from the database.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from shared.venues.base import VenueUpdate
from shared.venues.paper_wire import Update, update_wire


@dataclass(eq=False)  # compared and hashed by identity (kept in a set)
class Subscription:
    """One follower's queue; None in it means the follower was dropped (too slow) or the venue is stopping."""

    position: int  # the stream position when it subscribed: every later update is in `queue`
    queue: asyncio.Queue[Update | None] = field(default_factory=asyncio.Queue)


class UpdateHub:
    """Fans the venue's updates out to the subscribed followers, in order."""

    def __init__(self, backlog: int) -> None:
        self.position = 0
        self._backlog = backlog
        self._subscriptions: set[Subscription] = set()

    def subscribe(self) -> Subscription:
        subscription = Subscription(self.position)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    async def publish(self, update: VenueUpdate) -> None:
        """The venue's listener: numbered, then queued for every follower (a follower too far behind is dropped)."""
        self.position += 1
        message = Update(position=self.position, update=update_wire(update))
        for subscription in list(self._subscriptions):
            if subscription.queue.qsize() >= self._backlog:
                self._drop(subscription)
            else:
                subscription.queue.put_nowait(message)

    async def close(self) -> None:
        """End every follower's stream (the process is stopping)."""
        for subscription in list(self._subscriptions):
            self._drop(subscription)

    def _drop(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)
        subscription.queue.put_nowait(None)
