"""``etl``: the operators' command line (runs, quality, exports, dead letters, retention, decrypt, check)."""
