"""`make bench-check`: the CI guard on CPU and memory: the real pipeline on ~20,000 users against the recorded budget.

Fails (exit 1) when the CPU per user of the whole stack or of one service, as a multiple of the reference loader's
measured in the same run (scripts/bench.py ``loader``: fetch + parse + five rules + one insert per user, one process;
the least of three runs), or any service's peak RSS exceeds scripts/bench_budget.toml. CPU time, not wall-clock, so
it holds on a shared, faster or slower machine better than a rate would (the ratio still moves with the load: see
the budget's comments). A measurement over budget is taken once more before failing (a neighbour's burst
should not fail CI; a regression fails both). Environment: BENCH_CHECK_BUDGET (the budget file).
"""

import os
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path

import bench  # scripts/bench.py: run as a script, its folder is on the path

import testbed as tb

BUDGET = Path(__file__).resolve().parent / "bench_budget.toml"


def measure_once(sftp: tb.Sftp, work: Path, budget: dict) -> dict:
    """One pipeline run of ``budget["users"]`` users, then the reference loader on the same source."""
    n = int(budget["users"])
    base = Path(tempfile.mkdtemp(prefix=f"check{n}-", dir=work))
    stack = bench.Stack(base, sftp, n, 1, int(budget["page_size"]), int(budget["pool"]))
    try:
        result = bench.measure(stack, n)
        for role in [r for r in stack.roles if r != "source"]:
            stack.roles[role].stop()  # the loader runs alone, as the pipeline did
        # The yardstick three times, the least CPU taken (a neighbour's burst only adds CPU): it is the denominator
        # of every figure checked, and a single run of it moved by a third on the shared machine.
        loaders = [bench.loader(stack.source_url, n, int(budget["page_size"]), base / str(i)) for i in range(3)]
        result["loader"] = min(loaders, key=lambda x: x["cpu_us"])
        print("    reference loader, 3 runs (us per user): " + ", ".join(f"{x['cpu_us']:.0f}" for x in loaders))
    finally:
        stack.close()
        bench._clean(base, sftp)
    return result


def over_budget(r: dict, budget: dict) -> list[str]:
    """What exceeds the budget, in words; empty when everything is within it."""
    out = []
    if r["status"] != "succeeded":
        out.append(f"the run ended {r['status']}, not succeeded")
    cpu, loader_us = budget["cpu"], r["loader"]["cpu_us"]
    spent = {"whole stack": bench._stack_cpu(r)} | {
        role: sum(v for k, v in r["cpu"].items() if k.split("-")[0] == role) for role in cpu["services"]
    }
    for what, us in spent.items():
        measured = cpu["measured_ratio"] if what == "whole stack" else cpu["services"][what]
        factor = cpu["factor"] if what == "whole stack" else cpu["services_factor"]
        if not us / loader_us <= measured * factor:
            out.append(
                f"{what}: CPU per user {us:.0f} us = {us / loader_us:.2f}x the reference loader's {loader_us:.0f} us, "
                f"over the budget of {measured * factor:.2f}x ({measured}x measured x {factor})"
            )
    for role, measured in budget["rss_mb"]["measured"].items():
        limit = measured * budget["rss_mb"]["factor"]
        peak = max((v for k, v in r["peaks"].items() if k.split("-")[0] == role), default=float("nan"))
        if not peak <= limit:
            out.append(f"{role} peak RSS {peak:.0f} MB: over the budget of {limit:.0f} MB ({measured} MB measured)")
    return out


def main() -> int:
    path = Path(os.environ.get("BENCH_CHECK_BUDGET", BUDGET))
    budget = tomllib.loads(path.read_text())
    print(f"bench-check: {budget['users']:,} users against {path} (load average {os.getloadavg()[0]:.2f})", flush=True)
    work = Path(tempfile.mkdtemp(prefix="etl-bench-check-"))
    sftp = tb.start_sftp(work / "sshd", work / "ssh_keys", work / "upload")
    try:
        for attempt in (1, 2):
            result = measure_once(sftp, work, budget)
            bench.report(result)
            problems = over_budget(result, budget)
            if not problems:
                print("bench-check: within budget", flush=True)
                shutil.rmtree(work, ignore_errors=True)
                return 0
            print("bench-check: over budget:\n  " + "\n  ".join(problems), flush=True)
            if attempt == 1:
                print("bench-check: measuring once more before failing", flush=True)
    finally:
        sftp.stop()
    print(
        f"bench-check FAILED: a change made the pipeline slower or bigger (logs in {work}). Find it with "
        "BENCH_PROFILE=1 make bench; raise the budget in scripts/bench_budget.toml only on purpose, with the reason."
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
