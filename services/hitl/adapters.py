"""The hitl service's typed composition root: its use cases and adapters, built once per process.

`services/hitl/app.py` builds it in the lifespan and stores it in `runtime.adapters`; routers, the page and the
workers read it with `hitl_adapters(runtime)` (or the `Adapters` dependency).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Annotated

from fastapi import Depends, Request

from services.hitl.config import HitlSettings
from services.hitl.mirror import PolicyMirror
from services.hitl.policy_versions import PolicyVersions
from services.hitl.requests import OpenRequest, ReadRequests
from services.hitl.service import Decide, HitlContext
from services.hitl.voting import CastVote, ExpireDue
from shared.app_factory import ServiceRuntime, adapters_of
from shared.clock import utc_now
from shared.contracts.approvals import SubjectType


@dataclass(frozen=True, slots=True)
class HitlAdapters:
    settings: HitlSettings
    context: HitlContext
    mirror: PolicyMirror
    policies: PolicyVersions
    requests: ReadRequests
    open_request: OpenRequest
    vote: CastVote
    expire_due: ExpireDue


async def build_hitl_adapters(runtime: ServiceRuntime) -> None:
    settings = runtime.settings
    if not isinstance(settings, HitlSettings):
        raise TypeError(f"the hitl service runs on HitlSettings, not {type(settings).__name__}")
    mirror = PolicyMirror(sessionmaker=runtime.sessionmaker, redis=runtime.redis)
    context = HitlContext(
        sessionmaker=runtime.sessionmaker,
        tables=runtime.tables,
        clock=utc_now,
        decisions_topic=settings.decisions_topic,
        on_commit=partial(_wake, runtime, mirror),
        controls_topic=settings.hitl_controls_topic,
    )
    reads = ReadRequests(context)
    open_request = OpenRequest(context, reads)
    policies = PolicyVersions(context, open_request, mirror)
    decide = Decide(context, {SubjectType.POLICY_CHANGE.value: policies.apply_approved})
    runtime.adapters = HitlAdapters(
        settings=settings,
        context=context,
        mirror=mirror,
        policies=policies,
        requests=reads,
        open_request=open_request,
        vote=CastVote(context, decide, reads),
        expire_due=ExpireDue(context, decide),
    )


def _wake(runtime: ServiceRuntime, mirror: PolicyMirror) -> None:
    runtime.relay.wake()
    # A decision may have stored a policy version (an approved policy change): mirror it now, not next interval.
    mirror.wake.set()


def hitl_adapters(runtime: ServiceRuntime) -> HitlAdapters:
    return adapters_of(runtime, HitlAdapters)


def _from_request(request: Request) -> HitlAdapters:
    return hitl_adapters(request.app.state.runtime)


Adapters = Annotated[HitlAdapters, Depends(_from_request)]
