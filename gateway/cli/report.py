"""``distillgate report cost``: per task and key, who answered (student, cache, teacher),
teacher tokens and dollars, and dollars saved against sending everything to the teacher,
from the usage ledger in Redis; a table, or JSON, and a PNG of the daily split."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

from gateway.settings import Settings

__all__ = ["cost", "days_since"]


def days_since(since: str, today: dt.date) -> list[str]:
    """``7d``: the last seven UTC days, today included; ``2026-12-01``: from that day."""
    if since.endswith("d") and since[:-1].isdigit():
        first = today - dt.timedelta(days=max(1, int(since[:-1])) - 1)
    else:
        try:
            first = dt.date.fromisoformat(since)
        except ValueError:
            raise SystemExit(f"--since: {since!r} is neither Nd nor YYYY-MM-DD") from None
    if first > today:
        raise SystemExit(f"--since: {since} is after today ({today})")
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((today - first).days + 1)]


async def _read(settings: Settings, days: list[str]) -> dict[str, Any]:
    from gateway.redis_clients import async_redis
    from gateway.usage import read_usage

    client = async_redis(settings.redis_target)
    try:
        return await read_usage(client, days)
    finally:
        await client.aclose()


def cost(args: argparse.Namespace, settings: Settings) -> None:
    from gateway.usage.report import cost_rows, daily_split, plot_daily, render_table

    if not settings.redis_url:
        raise SystemExit("DISTILLGATE_REDIS_URL is empty: the usage ledger lives in Redis")
    days = days_since(args.since, dt.datetime.now(dt.UTC).date())
    usage = asyncio.run(_read(settings, days))
    if args.task:
        usage = {d: {k: v for k, v in u.items() if k[0] == args.task} for d, u in usage.items()}
    rows = cost_rows(usage, by_key=not args.by_task)
    split = daily_split(usage)
    if args.chart is not None:
        title = f"Who answered, per day ({days[0]} to {days[-1]})"
        plot_daily(split, args.chart, title)
    if args.json:
        report = {
            "object": "cost_report",
            "since": days[0],
            "until": days[-1],
            "rows": [r.as_dict() for r in rows],
            "daily": [{"day": day, "requests": counts} for day, counts in split],
        }
        print(json.dumps(report, indent=2))
        return
    print(f"teacher cost and savings, {days[0]} to {days[-1]} (UTC), from the usage ledger")
    print(render_table(rows))
    if args.chart is not None:
        print(f"wrote {Path(args.chart)}")
