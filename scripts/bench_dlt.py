"""The dlt side of `make bench-compare`: a REST API source into SQLite, run by the benchmark's own dlt venv.

Not part of the project's code: scripts/bench_compare.py runs it with the interpreter of `.run/bench-dlt-venv`
(dlt is never in pyproject.toml, requirements.lock or the images). It pages through the same local source the
pipeline reads (`?limit=L&skip=S` until `total`, users under `users`), loads them with dlt's defaults into a SQLite file
(sqlalchemy destination) and prints one JSON line: seconds and CPU seconds of `pipeline.run` alone (the import
is left out, as the pipeline's services are already up when it is triggered), rows loaded, peak RSS (VmHWM).
Usage: python scripts/bench_dlt.py SOURCE_URL DB_PATH WORK_DIR [PAGE_SIZE]
"""

import json
import os
import resource
import sqlite3
import sys
import time
from pathlib import Path


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and the children it has waited for."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str]) -> int:
    source_url, db_path, work = argv[1], Path(argv[2]), Path(argv[3])
    page_size = int(argv[4]) if len(argv) > 4 else 100
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    import dlt
    from dlt.sources.rest_api import rest_api_source

    base_url, _, resource_path = source_url.rstrip("/").rpartition("/")
    source = rest_api_source(
        {
            "client": {
                "base_url": base_url + "/",
                "paginator": {
                    "type": "offset",
                    "limit": page_size,
                    "offset_param": "skip",
                    "limit_param": "limit",
                    "total_path": "total",
                },
            },
            "resources": [{"name": "users", "endpoint": {"path": resource_path, "data_selector": "users"}}],
        }
    )
    pipeline = dlt.pipeline(
        pipeline_name="bench_users",
        pipelines_dir=str(work / "pipelines"),
        destination=dlt.destinations.sqlalchemy(f"sqlite:///{db_path}"),
        dataset_name="main",
    )
    cpu0, t0 = _cpu_s(), time.perf_counter()
    pipeline.run(source)
    seconds, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT count(*) FROM users").fetchone()[0]
    print(
        json.dumps(
            {"seconds": seconds, "cpu_s": cpu, "rows": rows, "peak_rss_mb": _vm_hwm_mb(), "dlt": dlt.__version__}
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
