"""The cost report's arithmetic: the ledger's days in, rows per task and key out (pure; the
CLI reads Redis and writes the files)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gateway.usage.ledger import Usage

__all__ = ["ROUTES", "CostRow", "cost_rows", "daily_split", "plot_daily", "render_table"]

ROUTES = ("student", "student-fallback", "cache", "teacher")
PURPOSES = ("escalation", "audit", "shadow")


@dataclass
class CostRow:
    """One task and key over the period. ``teacher_usd`` counts every teacher call (audits
    and shadow answers too, also in ``background_usd``); ``saved_usd`` is what the student's
    accepted answers and the cache did not pay the teacher."""

    task: str
    key: str
    requests: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ROUTES, 0))
    teacher_calls: int = 0
    teacher_input_tokens: int = 0
    teacher_output_tokens: int = 0
    teacher_usd: float = 0.0
    background_usd: float = 0.0
    saved_usd: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    def shares(self) -> dict[str, float]:
        total = self.total
        return {r: (n / total if total else 0.0) for r, n in self.requests.items()}

    def add(self, measure: str, value: float) -> None:
        kind, _, detail = measure.partition(":")
        if kind == "requests":
            self.requests[detail] = self.requests.get(detail, 0) + round(value)
        elif kind == "teacher_calls":
            self.teacher_calls += round(value)
        elif kind == "teacher_input_tokens":
            self.teacher_input_tokens += round(value)
        elif kind == "teacher_output_tokens":
            self.teacher_output_tokens += round(value)
        elif kind == "teacher_usd":
            self.teacher_usd += value
            if detail != "escalation":
                self.background_usd += value
        elif kind == "saved_usd":
            self.saved_usd += value

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out |= {"total_requests": self.total, "shares": self.shares()}
        for money in ("teacher_usd", "background_usd", "saved_usd"):
            out[money] = round(float(out[money]), 6)
        return out


def cost_rows(days: Mapping[str, Usage], *, by_key: bool = True) -> list[CostRow]:
    """One row per task and key (per task with ``by_key`` False), then a total row
    (task and key ``*``)."""
    rows: dict[tuple[str, str], CostRow] = {}
    total = CostRow("*", "*")
    for usage in days.values():
        for (task, key, measure), value in usage.items():
            key = key if by_key else "*"
            row = rows.get((task, key))
            if row is None:
                row = rows[task, key] = CostRow(task, key)
            row.add(measure, value)
            total.add(measure, value)
    return [rows[k] for k in sorted(rows)] + [total]


def daily_split(days: Mapping[str, Usage]) -> list[tuple[str, dict[str, int]]]:
    """Requests by route, day by day (every day of the period, quiet ones at 0)."""
    out = []
    for day in sorted(days):
        counts: dict[str, int] = defaultdict(int)
        for (_, _, measure), value in days[day].items():
            kind, _, route = measure.partition(":")
            if kind == "requests":
                counts[route] += round(value)
        out.append((day, {r: counts.get(r, 0) for r in ROUTES}))
    return out


def render_table(rows: Iterable[CostRow]) -> str:
    head = (
        "task",
        "key",
        "requests",
        "student",
        "fallback",
        "cache",
        "teacher",
        "teacher tokens in/out",
        "teacher $",
        "audits+shadow $",
        "saved $",
    )
    lines = [head]
    for row in rows:
        s = row.shares()
        lines.append(
            (
                row.task,
                row.key or "(no key)",
                str(row.total),
                f"{s['student']:.1%}",
                f"{s['student-fallback']:.1%}",
                f"{s['cache']:.1%}",
                f"{s['teacher']:.1%}",
                f"{row.teacher_input_tokens}/{row.teacher_output_tokens}",
                f"{row.teacher_usd:.4f}",
                f"{row.background_usd:.4f}",
                f"{row.saved_usd:.4f}",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    )


def plot_daily(split: list[tuple[str, dict[str, int]]], path: Path, title: str) -> None:
    """Stacked bars: each day's requests by who answered."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = [day for day, _ in split]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(days) + 3.5), 4))
    bottom = [0] * len(days)
    colours = {
        "student": "#4c9a2a",
        "student-fallback": "#a3c586",
        "cache": "#3b7dd8",
        "teacher": "#d8573b",
    }
    for route in ROUTES:
        values = [counts[route] for _, counts in split]
        ax.bar(days, values, 0.6, bottom=bottom, label=route, color=colours[route])
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("requests")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    if len(days) > 4:
        ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
