"""`amd-pipeline report`: one self-contained HTML page of charts from the published file. No dagster.

matplotlib draws static PNGs in-process (the Agg backend: no browser, no display, no network), which
are embedded in the page as data URIs, so the page opens offline and can be mailed as one file.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from pathlib import Path

import pandas as pd

from amd_pipeline.core.store import AmdStore

STATUS_COLORS = {
    "fetched": "#2f855a",
    "zero": "#9ae6b4",
    "partial": "#f6ad55",
    "deferred": "#90cdf4",
    "rejected": "#e53e3e",
    "missing": "#e2e8f0",
}


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _labelled(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``campaign_id`` as "operation campaign" when it holds several operations.

    Their campaign ids may collide, so several operations show side by side; one operation looks as before.
    """
    if "operation" in frame and frame.operation.nunique() > 1:
        frame = frame.assign(campaign_id=frame.operation + " " + frame.campaign_id)
    return frame


def charts(store: AmdStore, days: int = 60, *, operation: str | None = None) -> dict[str, bytes]:
    """The report's charts as PNG bytes: ``today``, ``trend``, ``weekday`` and ``completeness``.

    With ``operation``, that operation's campaigns only.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import dates as mdates
    from matplotlib import pyplot as plt
    from matplotlib.colors import ListedColormap

    def read(sql: str) -> pd.DataFrame:  # every table and view seen as that operation's alone, if one is asked
        return _labelled(store.query(sql, operation=operation))

    trend = read(
        f"SELECT * FROM amd_daily_trend WHERE local_date > (SELECT max(local_date) FROM amd_daily) - {int(days)} "
        "ORDER BY operation, campaign_id, local_date"
    )
    campaigns = sorted(trend.campaign_id.unique())
    unusual = read(
        "SELECT operation, campaign_id, local_date, total_amd, direction FROM amd_unusual_days "
        f"WHERE local_date > (SELECT max(local_date) FROM amd_daily) - {int(days)}"
    )
    out: dict[str, bytes] = {"today": today_chart(store, operation=operation)}

    figure, axes = plt.subplots(len(campaigns) or 1, 1, figsize=(10, 2.2 * max(len(campaigns), 1)), squeeze=False)
    for ax, campaign in zip(axes[:, 0], campaigns, strict=False):
        rows = trend[trend.campaign_id == campaign]
        name = rows.campaign_name.dropna().iloc[0] if rows.campaign_name.notna().any() else ""
        ax.bar(rows.local_date, rows.total_amd, color=["#4a5568" if f else "#f6ad55" for f in rows.is_final])
        ax.plot(rows.local_date, rows.avg_7d, color="#c53030", linewidth=2, label="7-day average")
        marks = unusual[unusual.campaign_id == campaign]
        if not marks.empty:  # a ring on each unusual day: far from the campaign's usual for that weekday
            ax.scatter(
                marks.local_date,
                marks.total_amd,
                s=90,
                facecolors="none",
                edgecolors="#d53f8c",
                linewidths=2,
                zorder=3,
                label="unusual day",
            )
        ax.set_title(f"{campaign} {name}".strip(), loc="left", fontsize=10)
        ax.set_ylabel("AMD per day")
        ax.legend(loc="upper left", fontsize=8)
        locator = mdates.AutoDateLocator(maxticks=10)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # "Nov", "13", ...: no overlaps
    figure.suptitle(
        f"Calls answered by a machine, last {days} days (orange: partial day; pink ring: unusual day)", fontsize=11
    )
    figure.tight_layout()
    out["trend"] = _png(figure)
    plt.close(figure)

    profile = read("SELECT * FROM amd_weekday_profile ORDER BY operation, campaign_id, weekday_number")
    grid = profile.pivot_table(index="campaign_id", columns="weekday_number", values="avg_total_amd").reindex(
        columns=range(1, 8)
    )
    figure, ax = plt.subplots(figsize=(8, 0.6 * max(len(grid), 1) + 1.5))
    image = ax.imshow(grid.to_numpy(dtype=float), cmap="viridis", aspect="auto")
    ax.set_xticks(range(7), ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"])
    ax.set_yticks(range(len(grid)), list(grid.index))
    for (y, x), value in pd.DataFrame(grid.to_numpy()).stack().items():
        ax.text(x, y, f"{value:.0f}", ha="center", va="center", color="white", fontsize=8)
    figure.colorbar(image, ax=ax, label="mean AMD per day")
    ax.set_title("Mean per weekday, final days of the last 8 weeks", loc="left", fontsize=10)
    out["weekday"] = _png(figure)
    plt.close(figure)

    status = read(
        "SELECT operation, campaign_id, local_date, status FROM amd_completeness "
        f"WHERE local_date > (SELECT max(local_date) FROM amd_completeness) - {int(days)}"
    )
    codes = {name: i for i, name in enumerate(STATUS_COLORS)}
    calendar = status.assign(code=status.status.map(codes)).pivot_table(
        index="campaign_id", columns="local_date", values="code", aggfunc="first"
    )
    figure, ax = plt.subplots(figsize=(10, 0.5 * max(len(calendar), 1) + 1.6))
    ax.imshow(
        calendar.to_numpy(dtype=float),
        cmap=ListedColormap(list(STATUS_COLORS.values())),
        vmin=-0.5,
        vmax=len(STATUS_COLORS) - 0.5,
        aspect="auto",
    )
    ax.set_yticks(range(len(calendar)), list(calendar.index))
    ticks = list(range(0, len(calendar.columns), 7))
    ax.set_xticks(ticks, [pd.Timestamp(calendar.columns[i]).strftime("%b %d") for i in ticks], fontsize=8)
    handles = [matplotlib.patches.Patch(color=c, label=s) for s, c in STATUS_COLORS.items()]
    ax.legend(handles=handles, ncol=6, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15))
    ax.set_title(f"Completeness, last {days} days", loc="left", fontsize=10)
    out["completeness"] = _png(figure)
    plt.close(figure)
    return out


def today_chart(store: AmdStore, *, operation: str | None = None) -> bytes:
    """A PNG of today's cumulative AMD per campaign by time of day (view ``amd_intraday_today``).

    Each line is drawn next to the same weekday's median of the last 8 weeks at the same times.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    today = _labelled(
        store.query(
            "SELECT * FROM amd_intraday_today ORDER BY operation, campaign_id, time_of_day", operation=operation
        )
    )
    campaigns = sorted(today.campaign_id.unique())
    columns = min(len(campaigns), 3) or 1
    lines = -(-len(campaigns) // columns) or 1
    figure, axes = plt.subplots(lines, columns, figsize=(10, 2.6 * lines), squeeze=False)
    for ax in axes.flat[len(campaigns) :]:
        ax.set_axis_off()
    if not campaigns:
        axes[0, 0].text(0.5, 0.5, "no snapshots of today yet", ha="center", va="center", fontsize=11)
    for ax, campaign in zip(axes.flat, campaigns, strict=False):
        rows = today[today.campaign_id == campaign]
        hours = [t.hour + t.minute / 60 + t.second / 3600 for t in rows.time_of_day]
        ax.plot(hours, rows.total_amd, marker=".", color="#2b6cb0", linewidth=2, label="today")
        ax.plot(hours, rows.usual_total_amd, "--", color="#718096", linewidth=1.5, label="usual (median)")
        ax.set_xlim(0, 24)
        ax.set_ylim(bottom=0)
        ax.set_xticks(range(0, 25, 6))
        ax.set_title(campaign, loc="left", fontsize=10)
        ax.set_ylabel("AMD so far")
        ax.legend(loc="upper left", fontsize=7)
    day = today.local_date.iloc[0].date() if len(today) else ""
    figure.suptitle(
        f"Today so far {day}: cumulative AMD by local hour; dashed: the same weekday's median (last 8 weeks)",
        fontsize=10,
    )
    figure.tight_layout()
    png = _png(figure)
    plt.close(figure)
    return png


def trend_thumbnail(daily: pd.DataFrame, days: int = 30) -> bytes:
    """A small PNG of the daily total over every campaign (``local_date``, ``total``, ``final``)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, ax = plt.subplots(figsize=(4.8, 1.5))
    ax.bar(daily.local_date, daily.total, color=["#4a5568" if f else "#f6ad55" for f in daily.final])
    ax.set_title(f"AMD per day, all campaigns, last {days} days", loc="left", fontsize=8)
    ax.tick_params(labelsize=6)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=72, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def write_report(
    store: AmdStore, out: Path, *, days: int = 60, png_dir: Path | None = None, operation: str | None = None
) -> dict[str, bytes]:
    """Write the HTML page (and, with ``png_dir``, each chart as a PNG file). Returns the charts.

    With several operations in the file, each campaign is named "operation campaign" in the charts and
    the tables have an ``operation`` column; with ``operation``, only that operation's campaigns.
    """
    images = charts(store, days, operation=operation)
    totals = store.query(
        "SELECT operation, campaign_id, count(*) AS days, sum(total_amd)::BIGINT AS total_amd, "
        "count(*) FILTER (WHERE NOT is_final) AS partial_days, min(local_date) AS first_day, "
        "max(local_date) AS last_day FROM amd_daily GROUP BY ALL ORDER BY operation, campaign_id",
        operation=operation,
    )
    unusual = store.query(
        "SELECT operation, campaign_id, local_date, weekday, total_amd, usual_total_amd, score, direction "
        f"FROM amd_unusual_days WHERE local_date > (SELECT max(local_date) FROM amd_daily) - {int(days)} "
        "ORDER BY local_date DESC, operation, campaign_id",
        operation=operation,
    )
    if totals.operation.nunique() <= 1:  # one operation: the page looks as before operations
        totals, unusual = totals.drop(columns="operation"), unusual.drop(columns="operation")
    unusual["local_date"] = [d.date() for d in unusual.local_date]
    titles = {
        "today": "Today so far, against a usual day at this time",
        "trend": "Daily trend per campaign, with its 7-day average",
        "weekday": "Weekday x campaign",
        "completeness": "Which days are missing or partial",
    }
    sections = "\n".join(
        f"<h2>{html.escape(titles[name])}</h2>\n"
        f'<img alt="{html.escape(titles[name])}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        for name, png in images.items()
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>AMD report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#1a202c}} img{{max-width:100%}}
table{{border-collapse:collapse}} td,th{{padding:4px 10px;border-bottom:1px solid #e2e8f0}}</style>
</head><body>
<h1>AMD accumulated: calls answered by a machine</h1>
<p>From {html.escape(str(store.path))}, made {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.</p>
{totals.to_html(index=False, border=0)}
{sections}
<h2>Unusual days</h2>
<p>Closed days far from the campaign's usual for that weekday: more than 3.5 robust deviations from the
median of its last 8 final days on the same weekday (view <code>amd_unusual_days</code>).</p>
{unusual.to_html(index=False, border=0) if len(unusual) else "<p>None in these days.</p>"}
</body></html>
"""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    if png_dir is not None:
        png_dir.mkdir(parents=True, exist_ok=True)
        for name, png in images.items():
            (png_dir / f"report_{name}.png").write_bytes(png)
    return images
