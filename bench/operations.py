"""Two Wolkvox operations side by side: UI backfills through `amd-pipeline dev --demo` and its daemon.

    python bench/operations.py                      # 3 campaigns x 30 days, L = 200 ms
    python bench/operations.py --latency-ms 400 --days 30 --rounds 3

Operation A alone, B alone, then both at once, on one `dagster dev`; each phase is checked against each
simulator's truth. docs/performance.md ("Two operations at once") says what it reports and measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from environments import NEVER, clean_env
from loopback import free_port, http
from output import log, machine, print_rows
from processes import start_dev, stop_group
from simulators import CAMPAIGNS
from truth import verify_operations
from webserver import graphql, launch_backfill, wait_backfills

OPERATIONS = {"demo_bog": "America/Bogota", "demo_mex": "America/Mexico_City"}
FIRST_DAY = dt.date(2026, 9, 1)

NODES = "{ assetNodes { assetKey { path } partitionKeysByDimension { name partitionKeys } } }"


def start_demo(
    workdir: Path, latency_ms: float, extra_env: dict[str, str]
) -> tuple[subprocess.Popen, int, dict[str, str]]:
    """`amd-pipeline dev --demo` on a free port, once both operations have their campaign partitions.

    Returns:
        The process, its port, and its simulators' URLs (from the defs.yaml it wrote).
    """
    home = workdir / "home"
    env = clean_env()
    # No scheduled refresh during a measurement: it would share the tokens with the backfills.
    env.update(DAGSTER_HOME=str(home), AMD_REFRESH_CRON=NEVER, **extra_env)
    port = free_port()
    with open(workdir / "dev.log", "w") as out:
        dev = start_dev(port, env, workdir, extra=["--demo", "--latency-ms", str(latency_ms)], output=out)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if dev.poll() is not None:
            raise RuntimeError(f"`amd-pipeline dev --demo` ended (see {workdir / 'dev.log'})")
        try:
            nodes = {tuple(n["assetKey"]["path"]): n for n in graphql(port, NODES)["data"]["assetNodes"]}
            found = [
                {d["name"]: d["partitionKeys"] for d in nodes[(op, "amd_daily")]["partitionKeysByDimension"]}
                for op in OPERATIONS
                if (op, "amd_daily") in nodes
            ]
            if len(found) == len(OPERATIONS) and all(f["campaign"] == CAMPAIGNS for f in found):
                break
        except (OSError, KeyError, TypeError):
            pass
        time.sleep(1)
    else:
        stop_group(dev, timeout=20)
        raise RuntimeError(f"the operations' campaign partitions never appeared (see {workdir / 'dev.log'})")
    urls = {
        op: re.search(r"base_url: (\S+)", (home / "demo_operations" / op / "defs.yaml").read_text()).group(1)
        for op in OPERATIONS
    }
    return dev, port, urls


def phase(port: int, urls: dict[str, str], ops: list[str], days: list[dt.date], duckdb_path: Path) -> dict:
    """UI backfills of ``ops`` launched at once; until every run has ended."""
    for url in urls.values():
        http(url + "/_sim/reset", {})
    names = [f"{c}|{d}" for c in CAMPAIGNS for d in days]
    launched = time.time()
    backfills = {op: launch_backfill(port, names, [op, "amd_daily"]) for op in ops}
    runs = wait_backfills(port, backfills, launched, 1800, "the backfills did not finish within 30 minutes")
    every = [r for rs in runs.values() for r in rs]
    first_start, last_end = min(r["startTime"] for r in every), max(r["endTime"] for r in every)
    day_texts = {d.strftime("%Y%m%d") for d in days}
    result = {
        "phase": " + ".join(ops) + (" at once" if len(ops) > 1 else " alone"),
        "runs": len(every),
        "wall_s": round(last_end - launched, 2),
        "runs_s": round(last_end - first_start, 2),
        "launch_to_first_run_s": round(first_start - launched, 2),
    }
    spans = {}
    for op in ops:
        stats = http(urls[op] + "/_sim/stats")
        calls = [
            r
            for r in http(urls[op] + "/_sim/requests")["requests"]
            if r["api"] == "campaign_6" and r["date_ini"][:8] in day_texts
        ]
        spans[op] = (min(c["start"] for c in calls), max(c["end"] for c in calls)) if calls else None
        op_runs = runs[op]
        result[f"{op}_runs_s"] = round(max(r["endTime"] for r in op_runs) - min(r["startTime"] for r in op_runs), 2)
        result[f"{op}_calls"] = len(calls)
        result[f"{op}_calls_s"] = round(spans[op][1] - spans[op][0], 2) if calls else None
        result[f"{op}_overlaps"] = stats["overlaps"]
        result[f"{op}_statuses"] = stats["statuses"]
    if len(ops) == 2 and all(spans.values()):
        (a0, a1), (b0, b1) = spans.values()
        result["calls_shared_s"] = round(min(a1, b1) - max(a0, b0), 2)
    ok = all(r["status"] == "SUCCESS" for r in every)
    result["check"] = verify_operations(duckdb_path, ops, CAMPAIGNS, days, launched) if ok else "FAILED runs"
    return result


def main() -> None:
    """Run the three phases ``--rounds`` times: a JSON line each, then the tables and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-ms", type=float, default=200)
    parser.add_argument("--days", type=int, default=30, help="days per campaign in each backfill")
    parser.add_argument("--rounds", type=int, default=1, help="times to run the three phases (medians at the end)")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="a variable for `dev` and its tree (repeat)"
    )
    args = parser.parse_args()
    extra_env = dict(item.split("=", 1) for item in args.env)
    days = [FIRST_DAY + dt.timedelta(days=i) for i in range(args.days)]
    workdir = Path(tempfile.mkdtemp(prefix="amd-bench-ops-"))
    print(f"machine: {machine()}")
    print(f"simulator latency L = {args.latency_ms:g} ms; {len(CAMPAIGNS)} campaigns x {args.days} days")
    print(f"workdir {workdir}" + "".join(f"; {k}={v}" for k, v in extra_env.items()))
    a, b = OPERATIONS
    log("starting `amd-pipeline dev --demo`")
    dev, port, urls = start_demo(workdir, args.latency_ms, extra_env)
    rounds: list[list[dict]] = []
    try:
        time.sleep(5)  # let the daemon finish its first ticks
        for n in range(args.rounds):
            rounds.append([])
            for ops in ([a], [b], [a, b]):
                log(f"round {n + 1}, phase: {' + '.join(ops)}")
                rounds[-1].append(phase(port, urls, ops, days, workdir / "data" / "amd.duckdb"))
                print(json.dumps(rounds[-1][-1]), flush=True)
    finally:
        stop_group(dev, timeout=30)
    print()
    columns = ["phase", "runs", "wall_s", "runs_s", "launch_to_first_run_s", "check"]
    print_rows(
        ["round", *columns], ([n, *(r.get(c, "") for c in columns)] for n, rs in enumerate(rounds, 1) for r in rs)
    )
    print()
    for n, results in enumerate(rounds, 1):
        for r in results:
            per_op = [
                f"{op}: {r[f'{op}_calls']} campaign_6 calls in {r[f'{op}_calls_s']} s, runs {r[f'{op}_runs_s']} s, "
                f"{r[f'{op}_overlaps']} overlapping"
                for op in OPERATIONS
                if f"{op}_calls" in r
            ]
            shared = f"; the two operations' calls shared {r['calls_shared_s']} s" if "calls_shared_s" in r else ""
            print(f"round {n}, {r['phase']}: " + "; ".join(per_op) + shared)
    print()
    for measure in ("runs_s", "wall_s"):
        ratios = []
        for n, (alone_a, alone_b, pair) in enumerate(rounds, 1):
            slower = max(alone_a[measure], alone_b[measure])
            ratios.append(pair[measure] / slower)
            print(f"round {n}: pair / slower alone ({measure}): {pair[measure]} / {slower} = {ratios[-1]:.2f}")
        print(f"median pair / slower alone ({measure}): {statistics.median(ratios):.2f} (target < 1.3)")


if __name__ == "__main__":
    main()
