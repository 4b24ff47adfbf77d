"""Names of a run's three files, relative to the data directory and to the SFTP folder (a contract)."""


def file_names(run_ts: str) -> dict[str, str]:
    """``raw_file``, ``processed_file`` and ``dlq_file`` of the run that started at ``run_ts`` (UTC)."""
    return {
        "raw_file": f"raw_users/records_{run_ts}.jsonl",
        "processed_file": f"processed_users/etl_{run_ts}.jsonl",
        "dlq_file": f"dlq/invalid_users_{run_ts}.jsonl",
    }
