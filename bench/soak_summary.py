"""The soak's verdict: one PASS or FAIL line per check, from what it recorded and read afterwards."""

from __future__ import annotations

import datetime as dt

MEMORY_GROWTH_LIMIT = 0.15  # the last minute's RSS may be at most 15% above the first minute's


def summarise(args, workdir, results, backfills, reader, runs, pool, totals, today) -> int:
    """Print a PASS/FAIL line per check and the failed runs' reasons; 0 when every check passed, else 1."""
    stats, memory = results["stats"], results["memory"]
    checks: list[tuple[str, bool, str]] = []

    checks.append(
        (
            "simulator overlaps",
            stats["overlaps"] == 0,
            f"{stats['overlaps']} overlaps, max in flight {stats['max_in_flight_seen']}; {stats['requests']} requests, "
            f"faults {sum(stats['faults_injected'].values())} {stats['faults_injected']}; calls {stats['calls']}; "
            f"statuses {stats['statuses']}",
        )
    )
    by_source: dict[str, dict[str, int]] = {}
    for r in runs:
        counts = by_source.setdefault(r["source"], {})
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    unfinished = [r for r in runs if r["status"] not in ("SUCCESS", "FAILURE", "CANCELED")]
    unexplained = [r for r in runs if r["status"] in ("FAILURE", "CANCELED") and not r["reason"]]
    explained = [r for r in runs if r["status"] in ("FAILURE", "CANCELED") and r["reason"]]
    per_source = "; ".join(
        f"{source}: " + ", ".join(f"{n} {status}" for status, n in sorted(c.items()))
        for source, c in sorted(by_source.items())
    )
    checks.append(
        (
            "runs ended",
            not unfinished and not unexplained,
            f"{len(runs)} runs ({per_source}); {len(unfinished)} not ended, {len(explained)} failed/canceled with "
            f"a reason, {len(unexplained)} without",
        )
    )
    tick_failures = sum(n for counts in pool["ticks"].values() for status, n in counts.items() if "FAILURE" in status)
    checks.append(
        (
            "schedule/sensor ticks",
            tick_failures == 0 and pool["ticks"].get("amd_daily_refresh", {}).get("SUCCESS", 0) > 0,
            "; ".join(
                f"{name}: " + (", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no ticks")
                for name, counts in sorted(pool["ticks"].items())
            ),
        )
    )
    checks.append(
        (
            "pool wolkvox_token",
            not pool["claimed"] and not pool["pending"],
            f"limit {pool['limit']}, {len(pool['claimed'])} slots claimed, {len(pool['pending'])} steps pending",
        )
    )
    missing = 0
    for b in backfills:
        if b.proc is not None and b.proc.returncode == 0:
            ids = b.campaigns or [str(30001 + n) for n in range(args.campaigns)]
            day = b.start
            while day <= b.end:
                missing += sum(1 for c in ids if (c, day) not in totals.get("keys", set()))
                day += dt.timedelta(days=1)
    checks.append(
        (
            "exact totals",
            totals["mismatches"] == 0 and totals["closed"] > 0 and missing == 0 and totals["today_over"] == 0,
            f"{totals['closed']} closed-day rows (before {today}) of {totals['rows']}: {totals['mismatches']} differ "
            f"from truth_for_day{' e.g. ' + str(totals['examples']) if totals['examples'] else ''}; "
            f"{missing} backfilled campaign-days missing; {totals['not_final']} closed rows not final; "
            f"{totals['today_over']} of today's rows above the day's truth",
        )
    )
    backfill_ok = all(b.proc is not None and b.proc.returncode == 0 for b in backfills)
    checks.append(
        (
            "CLI backfills",
            backfill_ok,
            "; ".join(
                f"{b.describe()} at +{b.at:.0f} s: "
                + (
                    f"exit {b.proc.returncode} in {b.ended - b.started:.1f} s"
                    if b.proc is not None and b.ended
                    else "not launched/ended"
                )
                for b in backfills
            ),
        )
    )
    checks.append(
        (
            "analyst reads",
            not reader.errors and reader.ok > 0,
            f"{reader.ok} ok, {len(reader.errors)} errors, {reader.not_yet} before the first publish; last "
            f"count/sum {reader.last}" + (f"; first errors: {reader.errors[:3]}" if reader.errors else ""),
        )
    )
    first, last = memory["first_long"], memory["last_long"]
    growth = (last - first) / first if first and last else None
    checks.append(
        (
            "memory flat",
            growth is not None and growth <= MEMORY_GROWTH_LIMIT,
            f"long-lived processes: first minute {first} MB, last minute {last} MB ({growth:+.1%}; "
            f"limit +{MEMORY_GROWTH_LIMIT:.0%}), peak {memory['max_long']} MB"
            if growth is not None
            else "not enough samples",
        )
    )
    checks.append(
        (
            "memory (whole tree)",
            True,
            f"first minute {memory['first_tree']} MB, last minute {memory['last_tree']} MB, peak {memory['max_tree']}"
            f" MB (includes run workers, up to {memory['max_workers']} at once); samples first/last/all "
            f"{memory['samples']}",
        )
    )
    checks.append(
        (
            "dev stopped cleanly",
            results["stopped_cleanly"] and not results["leftovers"],
            f"SIGINT -> exit {results['dev_rc']}; {len(results['leftovers'])} processes left behind; drain "
            f"{results['drained']:.1f} s; dev loaded in {results['loaded_s']:.1f} s",
        )
    )

    print()
    print(
        f"soak: {args.minutes:g} min, {args.campaigns} campaigns, L={args.latency_ms:g} ms, faults "
        f"{args.fault_rate:.0%} ({args.faults}), seed {args.seed}, "
        f"{'postgres' if args.pg_url else 'sqlite'} instance; workdir {workdir}"
    )
    width = max(len(name) for name, _, _ in checks)
    for name, ok, detail in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {name:<{width}}  {detail}")
    for r in explained + unexplained + unfinished:
        print(f"      run {r['run_id']} {r['status']} ({r['source']}): {r['reason'] or 'no reason recorded'}")
    failed = [name for name, ok, _ in checks if not ok]
    print(f"{'FAILED: ' + ', '.join(failed) if failed else 'all checks passed'}")
    return 1 if failed else 0
