"""What each of Dagster's private names buys: a CLI backfill with the feature's private path, then without.

    python bench/private.py                      # 50 campaigns x 60 days, 2 rounds
    python bench/private.py --days 20 --rounds 1 # a quick look

For ``batched_event_log``, ``partition_events`` and ``metadata`` (orchestration/dagster_private.py) it
times ``amd-pipeline backfill`` on a fresh DAGSTER_HOME with the shipped dagster.yaml against a simulator
at L = 0, with nothing blocked and with only that feature's ``dagster._`` imports made to fail (the
import hook of test_dagster_private.py), alternating, and checks exit 0, the rows against the ground
truth and the fallback notices. It then estimates ``BackfillPolicy.multi_run(K)`` with the public
``add_asset_metadata`` for 50 x 365 from measured runs of 500, 1000 and 2000 partitions and of one.
"""

from __future__ import annotations

import argparse
import ast
import shutil
import statistics
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from environments import bench_env
from output import log, machine
from processes import ROOT, days_span, timed
from simulators import SimProcess
from truth import verify

from amd_pipeline.orchestration.instance import shipped_instance_yaml

ROOM = ROOT / "amd_pipeline" / "orchestration" / "dagster_private.py"
FEATURES = ("batched_event_log", "partition_events", "metadata")
YEAR = 50 * 365  # the partitions of an operation's year
NOTICE = "amd_pipeline: Dagster"

# The child: the room's imports of BLOCKED fail (as if an upgrade had moved them), then the CLI runs. Its
# stderr goes to a file, read whole: the fallback notices come first, before what a tail would keep.
CLI_WITH_BLOCKED = textwrap.dedent("""
    import builtins, os, sys
    os.dup2(os.open({stderr!r}, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
    ROOM = "amd_pipeline.orchestration.dagster_private"
    BLOCKED = {blocked!r}
    real_import = builtins.__import__

    def moved(name, globals=None, locals=None, fromlist=(), level=0):
        if name in BLOCKED and (globals or {{}}).get("__name__") == ROOM:
            raise ImportError(f"cannot import name from {{name!r}} (moved by bench/private.py)")
        return real_import(name, globals, locals, fromlist, level)

    builtins.__import__ = moved
    from amd_pipeline.cli import main
    sys.argv[0] = "amd-pipeline"
    main()
""")


def room() -> tuple[dict[str, set[str]], dict[str, str]]:
    """Each feature's ``dagster._`` modules (the try whose ImportError marks it MISSING) and its fallback line.

    The ``InstanceRef`` try has a public fallback and marks nothing, so it is never blocked.
    """
    tree = ast.parse(ROOM.read_text())
    modules: dict[str, set[str]] = {}
    fallback: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "FALLBACK" for t in node.targets):
            fallback = ast.literal_eval(node.value)
        if not isinstance(node, ast.Try):
            continue
        marked = [
            target.slice.value
            for handler in node.handlers
            for stmt in handler.body
            if isinstance(stmt, ast.Assign)
            for target in stmt.targets
            if isinstance(target, ast.Subscript) and getattr(target.value, "id", "") == "MISSING"
        ]
        for feature in marked:
            modules.setdefault(feature, set()).update(
                stmt.module
                for stmt in node.body
                if isinstance(stmt, ast.ImportFrom) and (stmt.module or "").startswith("dagster._")
            )
    return modules, fallback


def only(feature: str, modules: dict[str, set[str]]) -> set[str]:
    """The modules only ``feature`` imports: blocking one makes its try fail, and no other feature's."""
    others = set().union(*(m for f, m in modules.items() if f != feature))
    return modules[feature] - others


def backfill(sim: SimProcess, workdir: Path, label: str, campaigns: int, days: int, blocked: set[str]) -> dict:
    """One timed CLI backfill of ``campaigns`` x ``days`` on a fresh instance; checked against the truth."""
    run_dir = workdir / label
    run_dir.mkdir()
    home = run_dir / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(shipped_instance_yaml())
    duckdb_path = run_dir / "amd.duckdb"
    env = bench_env(sim, run_dir, home, duckdb_path, "auto")
    env["AMD_CAMPAIGNS"] = ",".join(str(30001 + i) for i in range(campaigns))
    start, end = days_span(days)
    stderr = run_dir / "stderr.txt"
    script = CLI_WITH_BLOCKED.format(blocked=sorted(blocked), stderr=str(stderr))
    cmd = [sys.executable, "-c", script, "backfill", "--start", str(start), "--end", str(end), "--quiet"]
    sim.reset()
    run = timed(cmd, env, run_dir, 900)
    windows = campaigns * days
    said = stderr.read_text() if stderr.exists() else run["stderr"]
    check = verify(duckdb_path, windows) if run["code"] == 0 else f"FAILED rc={run['code']}: {said[-800:]}"
    notices = [line for line in said.splitlines() if line.startswith(NOTICE)]
    runs = len([p for p in (home / "history" / "runs").glob("*.db") if p.name != "index.db"])
    shutil.rmtree(run_dir, ignore_errors=True)
    ok = run["code"] == 0 and "MISMATCH" not in check and sim.stats()["overlaps"] == 0
    log(f"{label}: {run['wall']:.1f} s, {check}, {runs} run(s), {len(notices)} fallback notice(s)")
    return {"wall": run["wall"], "ok": ok, "check": check, "notices": notices, "runs": runs, "windows": windows}


def fit_line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least squares ``y = a + b x``."""
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    b = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    return my - b * mx, b


def main() -> None:
    """Run the backfills, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--campaigns", type=int, default=50)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    modules, fallback = room()
    blocks = {f: only(f, modules) for f in FEATURES}
    for feature, blocked in blocks.items():
        if not blocked:
            sys.exit(f"{feature}: no dagster._ module of its own in {ROOM.name}")
    sizes = sorted({max(1, n // args.campaigns) for n in (500, 1000, 2000)})  # days per estimate run
    workdir = Path(tempfile.mkdtemp(prefix="amd-private-"))
    print(f"machine: {machine()}")
    print(f"{args.campaigns} campaigns x {args.days} days = {args.campaigns * args.days:,} partitions, L = 0 ms")
    for feature, blocked in blocks.items():
        print(f"  {feature} blocked by failing: {', '.join(sorted(blocked))}")

    walls: dict[tuple[str, str], list[float]] = {}
    estimate: dict[int, list[float]] = {}
    failures: list[str] = []

    def record(key, result, expect: str | None) -> float:
        said = "\n".join(result["notices"])
        wanted = [] if expect is None else [expect]
        if not result["ok"] or [f for f in fallback if fallback[f] in said] != wanted or result["runs"] != 1:
            failures.append(f"{key}: {result['check']}, runs {result['runs']}, notices {result['notices']}")
        return result["wall"]

    sim = SimProcess(0, campaigns=args.campaigns)
    try:
        log("warm-up: 1-day backfill (not timed)")
        backfill(sim, workdir, "warm-up", args.campaigns, 1, set())
        for r in range(args.rounds):
            for feature in FEATURES:
                # alternate which side goes first, round by round
                sides = [("private", set()), ("public", blocks[feature])]
                for side, blocked in sides if r % 2 == 0 else sides[::-1]:
                    result = backfill(sim, workdir, f"r{r}-{feature}-{side}", args.campaigns, args.days, blocked)
                    expect = feature if side == "public" else None
                    walls.setdefault((feature, side), []).append(record((feature, side), result, expect))
            for days in [0, *sizes]:  # 0: the fixed cost of one run (1 campaign x 1 day)
                campaigns = 1 if days == 0 else args.campaigns
                result = backfill(
                    sim, workdir, f"r{r}-metadata-public-n{days}", campaigns, days or 1, blocks["metadata"]
                )
                n = 1 if days == 0 else campaigns * days
                estimate.setdefault(n, []).append(record(("estimate", n), result, "metadata"))
    finally:
        sim.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    n_all = args.campaigns * args.days
    print(f"\nMeasured: wall of `amd-pipeline backfill`, {n_all:,} partitions, median of {args.rounds} round(s)")
    print("| feature | private path (s) | public path (s) | public / private | per partition, private / public (ms) |")
    print("|---|---:|---:|---:|---:|")
    for feature in FEATURES:
        private = statistics.median(walls[(feature, "private")])
        public = statistics.median(walls[(feature, "public")])
        print(
            f"| {feature} | {private:.1f} | {public:.1f} | {public / private:.2f}x "
            f"| {private / n_all * 1000:.2f} / {public / n_all * 1000:.2f} |"
        )

    overhead = statistics.median(estimate[1])
    points = [(n, (statistics.median(w) - overhead) / n) for n, w in sorted(estimate.items()) if n > 1]
    print("\nMeasured: metadata public path (add_asset_metadata per partition), one run of n partitions")
    print("| n | wall (s) | per partition over the fixed cost (ms) |")
    print("|---:|---:|---:|")
    print(f"| 1 (1 campaign x 1 day: the fixed cost of one run) | {overhead:.1f} | |")
    for n, cost in points:
        print(f"| {n:,} | {statistics.median(estimate[n]):.1f} | {cost * 1000:.2f} |")
    a, b = fit_line(points)
    best = min(range(1, YEAR + 1), key=lambda k: YEAR / k * overhead + YEAR * (a + b * k))
    total = YEAR / best * overhead + YEAR * (a + b * best)
    private_cost = (statistics.median(walls[("metadata", "private")]) - overhead) / n_all
    print(f"\nComputed for {YEAR:,} partitions (50 x 365), from the figures above (not run):")
    print(
        f"  public path's per-partition cost, fitted: {a * 1000:.2f} ms + {b * 1e6:.3f} us x K (K: a run's partitions)"
    )
    print(
        f"  BackfillPolicy.multi_run(K): best K = {best:,} ({YEAR / best:.0f} runs): "
        f"{YEAR:,}/K x {overhead:.1f} s + {YEAR:,} x per-partition cost(K) = {total:.0f} s"
    )
    print(
        f"  private path, one run: {overhead:.1f} s + {YEAR:,} x {private_cost * 1000:.2f} ms "
        f"(measured per partition at {n_all:,}) = {overhead + YEAR * private_cost:.0f} s"
    )
    print(
        f"  one run with the public path: {overhead:.1f} s + {YEAR:,} x per-partition cost({YEAR:,}) = "
        f"{overhead + YEAR * (a + b * YEAR):.0f} s"
    )
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
