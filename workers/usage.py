"""Model usage and estimated cost from the job records (``lifetales usage``).

Each job's ``usage`` is what its model calls reported (``{model, inputTokens, outputTokens,
calls}``, and ``videoSeconds`` for a video model); a job answered from the cache made no call and
has none. Cost is estimated at the list prices of ``config.MODEL_PRICES_USD_PER_MTOK`` and, for
video, ``config.MODEL_PRICES_USD_PER_VIDEO_SECOND``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from config import estimated_cost_usd
from models import Job

_SINCE = re.compile(r"\s*(\d+)\s*([smhdw])\s*")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str) -> timedelta:
    """``30m``, ``24h``, ``7d`` (also ``s`` and ``w``) as a duration."""
    match = _SINCE.fullmatch(text)
    if match is None or int(match.group(1)) <= 0:
        raise ValueError(f"expected a duration such as 30m, 24h or 7d, not {text!r}")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


@dataclass
class UsageRow:
    agent: str  # the job kind whose agent made the calls
    model: str
    jobs: int = 0
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    video_seconds: float = 0.0

    @property
    def cost_usd(self) -> float | None:
        return estimated_cost_usd(self.model, self.input_tokens, self.output_tokens,
                                  self.video_seconds)


def usage_since(session: Session, since: datetime) -> list[UsageRow]:
    """Usage of the jobs created since ``since``, by agent and model."""
    rows: dict[tuple[str, str], UsageRow] = {}
    query = (
        select(Job.kind, Job.usage)
        .where(Job.created_at >= since, Job.usage.is_not(None))
        .execution_options(yield_per=1000)
    )
    for kind, usage in session.execute(query):
        if not isinstance(usage, dict):
            continue
        model = str(usage.get("model") or "unknown")
        row = rows.setdefault((kind, model), UsageRow(kind, model))
        row.jobs += 1
        row.calls += _int(usage.get("calls"))
        row.input_tokens += _int(usage.get("inputTokens"))
        row.output_tokens += _int(usage.get("outputTokens"))
        seconds = usage.get("videoSeconds")
        row.video_seconds += float(seconds) if isinstance(seconds, int | float) else 0.0
    return sorted(rows.values(), key=lambda r: (r.agent, r.model))


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def total(rows: list[UsageRow]) -> UsageRow:
    summed = UsageRow("total", "")
    for row in rows:
        summed.jobs += row.jobs
        summed.calls += row.calls
        summed.input_tokens += row.input_tokens
        summed.output_tokens += row.output_tokens
        summed.video_seconds += row.video_seconds
    return summed


def total_cost_usd(rows: list[UsageRow]) -> float:
    return sum(row.cost_usd or 0.0 for row in rows)


def format_table(rows: list[UsageRow], since: datetime, window: str) -> str:
    """The report as an aligned text table with a total line."""
    header = ("agent", "model", "jobs", "calls", "tokens in", "tokens out", "video s",
              "est. cost USD")
    lines = [header]
    for row in rows:
        cost = row.cost_usd
        lines.append((row.agent, row.model, f"{row.jobs:,}", f"{row.calls:,}",
                      f"{row.input_tokens:,}", f"{row.output_tokens:,}",
                      f"{row.video_seconds:,.1f}" if row.video_seconds else "-",
                      "-" if cost is None else f"{cost:.4f}"))
    summed = total(rows)
    lines.append(("total", "", f"{summed.jobs:,}", f"{summed.calls:,}",
                  f"{summed.input_tokens:,}", f"{summed.output_tokens:,}",
                  f"{summed.video_seconds:,.1f}", f"{total_cost_usd(rows):.4f}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def render(line: tuple[str, ...]) -> str:
        cells = [cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i])
                 for i, cell in enumerate(line)]
        return "  ".join(cells).rstrip()

    title = f"Model usage of jobs created since {since:%Y-%m-%d %H:%M} UTC (last {window})"
    body = [render(line) for line in lines]
    rule = "-" * len(body[0])
    note = ("Cost: estimated at list prices (config.MODEL_PRICES_USD_PER_MTOK; video by the "
            "second, config.MODEL_PRICES_USD_PER_VIDEO_SECOND); '-': no price for that model. "
            "Jobs answered from the cache made no calls.")
    return "\n".join([title, "", body[0], rule, *body[1:-1], rule, body[-1], "", note])
