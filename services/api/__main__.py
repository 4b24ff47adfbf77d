"""Entry point: ``python -m api`` serves the API with uvicorn."""

import sys

import uvicorn

from api.deps import get_settings
from etl_common import logs, tracing


def main() -> int:
    settings = get_settings()
    if settings.api_auth == "token" and not settings.api_token:
        print("ETL_API_TOKEN is required (or set ETL_API_AUTH=none for local use)", file=sys.stderr)
        return 2
    logs.configure("api", settings.log_level, settings.log_format)
    tracing.configure("api")
    uvicorn.run("api.main:create_app", factory=True, host=settings.api_host, port=settings.api_port,
                log_config=None, access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
