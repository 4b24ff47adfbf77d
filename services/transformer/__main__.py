"""Entry point: ``python -m transformer`` consumes raw pages until SIGTERM."""

import gc
import sys

from etl_common import runtime
from etl_common.settings import load
from transformer.contract import ContractError, load_contract
from transformer.enrich import load_departments
from transformer.settings import TransformerSettings
from transformer.worker import Worker

GC_THRESHOLD = 50_000


def main() -> int:
    """Load the departments, wait for Redis, consume until SIGTERM; exit status 0 (1 when Redis stays away,
    2 on a bad setting or contract)."""
    settings = load(TransformerSettings)
    departments = load_departments(settings.departments_csv)
    try:
        contract = load_contract(settings.contract_path, settings.contract_policy)
    except ContractError as exc:
        print(f"invalid setting: ETL_CONTRACT_PATH: {exc}", file=sys.stderr)
        return 2
    # A page's ~15,000 objects live until it is handed on and are then freed by their reference counts, so the
    # collector finds nothing: with the default threshold (700) it still ran about once a page, a deeper pass every
    # ten and a full one over the start-up heap, ~2-3 µs of CPU per user (measured with gc.callbacks). The start-up
    # heap is frozen, and a collection waits for 50,000 objects more than were freed (a few pages' worth, should
    # cycles ever pile up); peak RSS unchanged.
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD)
    runtime.run_worker(
        "transformer",
        settings,
        lambda client, heartbeat, stopper: Worker(settings, client, departments, heartbeat, stopper, contract),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
