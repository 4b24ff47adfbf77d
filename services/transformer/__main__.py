"""Entry point: ``python -m transformer`` consumes raw pages until SIGTERM."""

import sys

from etl_common import runtime
from etl_common.settings import load
from transformer.contract import ContractError, load_contract
from transformer.enrich import load_departments
from transformer.settings import TransformerSettings
from transformer.worker import Worker


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
    runtime.run_worker(
        "transformer",
        settings,
        lambda client, heartbeat, stopper: Worker(settings, client, departments, heartbeat, stopper, contract),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
