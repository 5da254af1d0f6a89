"""The real bill of a render: RunPod's billing records against what videokit estimated.

RunPod bills in hourly buckets (``bucketSize``, ``startTime``/``endTime`` snapped out to them):
``/v2/billing/serverless?serverlessId=ID`` one endpoint of yours, ``/v2/billing/endpoints`` *all*
Public Endpoints together (no id). Each billing line is compared with the buckets that overlap
the render's window (its run's start to the manifest's last update). Rule (:func:`reconcile`):

- ``ratio`` = billed / estimated; the estimate's goal is ``|ratio - 1| <= 0.15``.
- ``other_traffic`` when billed > 1.5 x estimated and by more than $0.01: more than this render's
  jobs can explain even with the estimate's error, cold starts and idle time; the bill includes
  jobs that are not this render's, and the ratio then says nothing about the estimate.
- ``not_billed_yet`` when nothing is billed though the render spent money (billing lags).
A render shorter than its buckets cannot be separated from other traffic in them: always said.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field

from videokit.backends.kinds.catalogue import public_model
from videokit.rest.client import RunPodRest
from videokit.rest.models import ListEndpointBillingResponse, ListServerlessBillingResponse

__all__ = [
    "ACCURACY_GOAL",
    "OTHER_TRAFFIC_MIN_USD",
    "OTHER_TRAFFIC_RATIO",
    "BillingLine",
    "Bucket",
    "EndpointEstimate",
    "Reconciliation",
    "bucket_window",
    "fetch_bills",
    "reconcile",
]

#: The estimate's accuracy goal: within 15 % of the bill.
ACCURACY_GOAL = 0.15
#: Billed above this multiple of the estimate (and by more than the minimum) is other traffic.
OTHER_TRAFFIC_RATIO = 1.5
OTHER_TRAFFIC_MIN_USD = 0.01
BUCKET: Literal["hour"] = "hour"
PUBLIC = "public endpoints"

Flag = Literal["ok", "other_traffic", "not_billed_yet"]


class Bucket(BaseModel):
    """One billing record: what RunPod billed from ``start`` to ``end``."""

    start: datetime
    end: datetime
    usd: float


class BillingLine(BaseModel):
    """One line of the bill: an endpoint of your own, or all public endpoints together."""

    billing: str  # the endpoint id, or "public endpoints"
    route: Literal["serverless", "endpoints"]
    endpoints: list[str]
    stages: list[str]
    jobs: int = 0
    estimated_usd: float
    # The part of estimated_usd that is videokit's own estimate (the endpoint gave no figures).
    estimated_part_usd: float = 0.0
    billed_usd: float
    ratio: float | None = None
    within_goal: bool | None = None
    flag: Flag = "ok"
    buckets: list[Bucket] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


class Reconciliation(BaseModel):
    """Estimated vs billed for one render (the manifest keeps the latest)."""

    checked: str
    run_id: str | None = None
    window_start: datetime
    window_end: datetime
    bucket_size: str = BUCKET
    billed_start: datetime
    billed_end: datetime
    lines: list[BillingLine] = Field(default_factory=list)
    estimated_usd: float = 0.0
    billed_usd: float = 0.0
    ratio: float | None = None
    flagged: bool = False
    notes: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class EndpointEstimate:
    """What the render's jobs on one endpoint cost by videokit's account."""

    endpoint_id: str
    stage: str
    jobs: int
    usd: float
    estimated_usd: float = 0.0  # the part of usd that is the client's estimate


def bucket_window(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The hour-aligned window the buckets of ``start``..``end`` cover (as RunPod snaps it)."""
    low = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    high = end.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if high < end.astimezone(UTC) or high <= low:
        high += timedelta(hours=1)
    return low, high


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def line_of(endpoint_id: str) -> str:
    """The billing line an endpoint falls on: its own id, or all public endpoints together."""
    return PUBLIC if public_model(endpoint_id) is not None else endpoint_id


async def fetch_bills(
    rest: RunPodRest, lines: list[str], start: datetime, end: datetime
) -> dict[str, list[Bucket]]:
    """Each billing line's buckets over the hours ``start``..``end`` touch."""
    low, high = bucket_window(start, end)
    query = {"startTime": _iso(low), "endTime": _iso(high), "bucketSize": BUCKET}
    bills: dict[str, list[Bucket]] = {}
    for line in lines:
        if line == PUBLIC:
            public = await rest.get("billing/endpoints", ListEndpointBillingResponse, query)
            records = [(r.startTime, r.endTime, r.totalAmount) for r in public.records]
        else:
            params = {**query, "serverlessId": line}
            own = await rest.get("billing/serverless", ListServerlessBillingResponse, params)
            mine = [r for r in own.records if r.serverlessId == line]
            records = [(r.startTime, r.endTime, r.totalAmount) for r in mine]
        bills[line] = [Bucket(start=s, end=e, usd=usd) for s, e, usd in records]
    return bills


def reconcile(
    estimates: list[EndpointEstimate],
    bills: dict[str, list[Bucket]],
    start: datetime,
    end: datetime,
    *,
    now: datetime,
    run_id: str | None = None,
) -> Reconciliation:
    """Estimated vs billed per billing line and in total, with the flags of the module's rule.

    Only buckets that overlap ``start``..``end`` count. Pure: no I/O.
    """
    low, high = bucket_window(start, end)
    grouped: dict[str, list[EndpointEstimate]] = {}
    for estimate in estimates:
        grouped.setdefault(line_of(estimate.endpoint_id), []).append(estimate)
    lines: list[BillingLine] = []
    for name, group in grouped.items():
        buckets = [b for b in bills.get(name, []) if b.start < end and b.end > start]
        lines.append(_line(name, group, buckets))
    minutes = max(1, round((end - start).total_seconds() / 60))
    hours = max(1, round((high - low).total_seconds() / 3600))
    notes = [
        f"RunPod bills by the hour: the bill covers {_iso(low)} to {_iso(high)} ({hours} h) for "
        f"a render of {minutes} min; other jobs on the same endpoints in those hours cannot be "
        "told apart from this render's"
    ]
    estimated = round(sum(line.estimated_usd for line in lines), 6)
    billed = round(sum(line.billed_usd for line in lines), 6)
    return Reconciliation(
        checked=now.astimezone(UTC).isoformat(timespec="seconds"),
        run_id=run_id,
        window_start=start,
        window_end=end,
        billed_start=low,
        billed_end=high,
        lines=lines,
        estimated_usd=estimated,
        billed_usd=billed,
        ratio=round(billed / estimated, 4) if estimated > 0 else None,
        flagged=any(line.flag != "ok" for line in lines),
        notes=notes,
    )


def _line(name: str, group: list[EndpointEstimate], buckets: list[Bucket]) -> BillingLine:
    estimated = round(sum(e.usd for e in group), 6)
    billed = round(sum(b.usd for b in buckets), 6)
    ratio = round(billed / estimated, 4) if estimated > 0 else None
    flag: Flag = "ok"
    notes: list[str] = []
    if billed <= 0 and estimated > 0:
        flag = "not_billed_yet"
        notes.append("nothing billed yet: RunPod's billing can lag; run `videokit cost` later")
    elif billed > estimated * OTHER_TRAFFIC_RATIO and billed - estimated > OTHER_TRAFFIC_MIN_USD:
        flag = "other_traffic"
        notes.append(
            "other traffic in the window: the bill includes jobs that are not this render's "
            f"(billed is more than {OTHER_TRAFFIC_RATIO:g}x the estimate), so the ratio does "
            "not measure the estimate"
        )
    if name == PUBLIC:
        notes.append(
            "RunPod bills all Public Endpoints together: this is every public-endpoint job of "
            "the account in these hours"
        )
    endpoints = sorted({e.endpoint_id for e in group})
    return BillingLine(
        billing=name,
        route="endpoints" if name == PUBLIC else "serverless",
        endpoints=endpoints,
        stages=sorted({e.stage for e in group}),
        jobs=sum(e.jobs for e in group),
        estimated_usd=estimated,
        estimated_part_usd=round(sum(e.estimated_usd for e in group), 6),
        billed_usd=billed,
        ratio=ratio,
        within_goal=abs(ratio - 1) <= ACCURACY_GOAL if ratio is not None else None,
        flag=flag,
        buckets=buckets,
        notes=notes,
    )
