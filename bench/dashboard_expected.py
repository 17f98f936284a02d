"""What the dashboard's pages must show on the seeded database: its people, the log's anchors and views,
and the figures read straight from the database to check every page against."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import ColumnElement, case, func, literal, select, tuple_

from bastion.auth.passwords import hash_password
from bastion.dashboard.formats import count, usd
from bastion.dashboard.usage import PAGE_SIZE
from bastion.db.audit import Actor
from bastion.db.models import UsageRecord
from bastion.db.request_log import Cursor
from bastion.db.store import Store
from bench.dashboard_seed import RETIRED, Seeded

FOLLOWED = 5  # "Older" links followed from the log's first page to the deep page
FILTER_MODEL = "deepseek-r1-distill-llama-70b"  # 5 % of the requests


@dataclass
class People:
    owner: str
    operator: str
    password: str


async def invite_people(store: Store, account_id: str) -> People:
    """An owner of the large account and an operator, with passwords set through their one-time links."""
    token = secrets.token_hex(4)
    people = People(
        f"owner-{token}@bench.example", f"operator-{token}@bench.example", secrets.token_urlsafe(18)
    )
    password_hash = await hash_password(people.password)
    for email, operator in ((people.owner, False), (people.operator, True)):
        account, role = (None, None) if operator else (account_id, "owner")
        _, link = await store.people.invite(email, operator, account, role, Actor("bench"))
        await store.people.set_password(link, password_hash, None)
    return people


@dataclass(frozen=True)
class Anchors:
    """Where the deep and filtered pages point, from the seeded data."""

    half_way: tuple[datetime, int]  # the large account's record half way back: (created_at, id)
    one_day: date  # a day a month ago

    @property
    def cursor(self) -> str:
        return Cursor(*self.half_way).encode()


@dataclass(frozen=True)
class LogView:
    """A page of the request log and the query of this module's own that says which rows it must show."""

    title: str
    who: str
    path: str | None  # None: reached by following "Older" links from the first page
    account_id: str | None
    where: tuple[ColumnElement[bool], ...] = ()
    after: tuple[datetime, int] | None = None
    offset: int = 0


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def log_views(seeded: Seeded, anchors: Anchors) -> list[LogView]:
    big, records = seeded.big, UsageRecord
    base = f"/dashboard/a/{big.id}/usage"
    day = anchors.one_day
    one_day = (records.created_at >= _midnight(day), records.created_at < _midnight(day + timedelta(days=1)))
    least_used, revoked = big.key_ids[-1], big.revoked_key_id
    assert revoked is not None, "the large account's shape has a revoked key"
    return [
        LogView("request log, first page", "owner", base, big.id),
        LogView(
            f"request log, page {FOLLOWED + 1} (cursors followed)",
            "owner",
            None,
            big.id,
            offset=FOLLOWED * PAGE_SIZE,
        ),
        LogView(
            "request log, cursor half way back (45 days)",
            "owner",
            f"{base}?after={anchors.cursor}",
            big.id,
            after=anchors.half_way,
        ),
        LogView(
            f"request log, model={FILTER_MODEL} (5 %)",
            "owner",
            f"{base}?model={FILTER_MODEL}",
            big.id,
            (records.model == FILTER_MODEL,),
        ),
        LogView(
            "request log, status=error (3.5 %)",
            "owner",
            f"{base}?status=error",
            big.id,
            (records.status >= 400,),
        ),
        LogView(
            "request log, key= its least used key",
            "owner",
            f"{base}?key={least_used}",
            big.id,
            (records.key_id == least_used,),
        ),
        LogView(
            f"request log, from=to={day} (one day)", "owner", f"{base}?from={day}&to={day}", big.id, one_day
        ),
        LogView(
            f"request log, model={RETIRED.id} (newest 75 days old)",
            "owner",
            f"{base}?model={RETIRED.id}",
            big.id,
            (records.model == RETIRED.id,),
        ),
        LogView(
            "request log, key= revoked 60 days ago",
            "owner",
            f"{base}?key={revoked}",
            big.id,
            (records.key_id == revoked,),
        ),
        LogView("operator: all usage, first page", "operator", "/dashboard/usage", None),
        LogView(
            "operator: all usage, cursor half way back",
            "operator",
            f"/dashboard/usage?after={anchors.cursor}",
            None,
            after=anchors.half_way,
        ),
        LogView(
            f"operator: all usage, model={RETIRED.id}",
            "operator",
            f"/dashboard/usage?model={RETIRED.id}",
            None,
            (records.model == RETIRED.id,),
        ),
    ]


@dataclass
class Expected:
    """What each page must show, read from the database by queries of this module's own."""

    anchors: Anchors
    cards: dict[str, tuple[str, str]]  # figure -> (value, sub-line) on the overview
    rows: dict[str, tuple[list[str], bool]]  # log page title -> (request ids, whether older ones exist)


async def newest_ids(store: Store, view: LogView) -> tuple[list[str], bool]:
    """The request ids a log page must show, newest first, and whether older ones exist."""
    query = select(UsageRecord.request_id).where(*view.where)
    if view.account_id is not None:
        query = query.where(UsageRecord.account_id == view.account_id)
    if view.after is not None:
        moment, ident = view.after
        bound = tuple_(literal(moment, UsageRecord.created_at.type), literal(ident, UsageRecord.id.type))
        query = query.where(tuple_(UsageRecord.created_at, UsageRecord.id) < bound)
    query = query.order_by(UsageRecord.created_at.desc(), UsageRecord.id.desc())
    async with store.engine.connect() as connection:
        ids = list((await connection.execute(query.offset(view.offset).limit(PAGE_SIZE + 1))).scalars())
    return ids[:PAGE_SIZE], len(ids) > PAGE_SIZE


async def _totals(store: Store, account_id: str, since: datetime) -> tuple[int, int, int]:
    """(cost, requests, errors) of an account's records from `since` on."""
    query = select(
        func.coalesce(func.sum(UsageRecord.cost_nano), 0),
        func.count(),
        func.coalesce(func.sum(case((UsageRecord.status >= 400, 1), else_=0)), 0),
    ).where(UsageRecord.account_id == account_id, UsageRecord.created_at >= since)
    async with store.engine.connect() as connection:
        cost, requests, errors = (await connection.execute(query)).one()
    return int(cost), int(requests), int(errors)


async def anchors_of(store: Store, seeded: Seeded, today: date) -> Anchors:
    middle = seeded.first + (seeded.now - seeded.first) / 2
    query = (
        select(UsageRecord.created_at, UsageRecord.id)
        .where(UsageRecord.account_id == seeded.big.id, UsageRecord.created_at <= middle)
        .order_by(UsageRecord.created_at.desc(), UsageRecord.id.desc())
        .limit(1)
    )
    async with store.engine.connect() as connection:
        created_at, ident = (await connection.execute(query)).one()
    created_at = created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)  # SQLite's are naive
    return Anchors((created_at, int(ident)), today - timedelta(days=30))


async def expectations(store: Store, seeded: Seeded, today: date) -> Expected:
    anchors = await anchors_of(store, seeded, today)
    cost, requests, _ = await _totals(store, seeded.big.id, _midnight(today - timedelta(days=29)))
    _, in_90_days, errors = await _totals(store, seeded.big.id, _midnight(today - timedelta(days=89)))
    cards = {
        "spend-30d": (usd(cost), f"{count(requests)} requests"),
        "requests-90d": (count(in_90_days), f"{count(errors)} failed"),
    }
    rows = {view.title: await newest_ids(store, view) for view in log_views(seeded, anchors)}
    return Expected(anchors, cards, rows)
