"""Workers built in this process for unit tests (arq's worker factory): real Redis, settings as keywords, a temp dir."""

import uuid
from pathlib import Path
from typing import Any, Literal, TypeAlias, overload

from etl_common.ops import Heartbeat
from etl_common.redis_client import connect
from etl_common.runtime import Stopper
from extractor.service import Service
from extractor.settings import ExtractorSettings
from saver.settings import SaverSettings
from saver.store import Store
from saver.worker import Worker as SaverWorker
from transformer.contract import load_contract
from transformer.enrich import load_departments
from transformer.settings import TransformerSettings
from transformer.worker import Worker as TransformerWorker

Built: TypeAlias = TransformerWorker | SaverWorker | Service


@overload
def build_worker(service: Literal["transformer"], redis_url: str, base: Path, **settings: Any) -> TransformerWorker: ...
@overload
def build_worker(service: Literal["saver"], redis_url: str, base: Path, **settings: Any) -> SaverWorker: ...
@overload
def build_worker(service: Literal["extractor"], redis_url: str, base: Path, **settings: Any) -> Service: ...
def build_worker(service: str, redis_url: str, base: Path, **settings: Any) -> Built:
    """The worker object ``python -m <service>`` would serve, built as its entry point builds it, not started.

    ``settings`` are the service's settings by field name (``block_ms=10``), over test defaults: a fresh key prefix,
    this consumer named after the service, short blocking reads, and for the saver a database and files under
    ``base`` with SFTP off. Nothing is read from a ``.env``; the extractor needs a ``source_url``. A test drives it
    with ``turn()`` (or ``handle``); its ``stopper`` is the process-wide stop, so ``serve()`` is for a thread that
    sets and clears it. ``close_worker`` releases what it holds.
    """
    common: dict[str, Any] = {
        "redis_url": redis_url,
        "key_prefix": f"t{uuid.uuid4().hex[:10]}:",
        "consumer_name": service,
        "block_ms": 10,
    }
    client = connect(redis_url)
    if service == "transformer":
        ts = TransformerSettings(_env_file=None, **{**common, **settings})
        contract = load_contract(ts.contract_path, ts.contract_policy)
        departments = load_departments(ts.departments_csv)
        return TransformerWorker(ts, client, departments, Heartbeat(ts.heartbeat_stale_s), Stopper(), contract)
    if service == "saver":
        paths = {"db_path": str(base / "database" / "data.db"), "data_dir": str(base / "data"), "sftp_enabled": False}
        ss = SaverSettings(_env_file=None, **{**common, **paths, **settings})
        Path(ss.db_path).parent.mkdir(parents=True, exist_ok=True)
        store = Store(ss.db_path)  # as the saver's entry point (the worker appends the files as pages commit)
        return SaverWorker(ss, client, store, Heartbeat(ss.heartbeat_stale_s), Stopper())
    if service == "extractor":
        if "source_url" not in settings:
            raise ValueError("the extractor needs source_url= (a local source server): no test fetches from the web")
        es = ExtractorSettings(_env_file=None, **{**common, **settings})
        return Service(es, client, Heartbeat(es.heartbeat_stale_s), Stopper())
    client.close()
    raise ValueError(f"no in-process worker for {service!r}; there are: extractor, transformer, saver")


def close_worker(worker: Built) -> None:
    """Close the worker's Redis client and, for the saver, its quality-report children and its database."""
    if isinstance(worker, SaverWorker):
        worker.reports.kill_all()
        worker.store.close()
    worker.client.close()
