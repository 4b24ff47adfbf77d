"""The OpenAPI document: the bearer scheme declared on every operation that can answer 401."""

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

SCHEME = "bearerAuth"


def install(app: FastAPI) -> None:
    """Replace ``app.openapi`` with one that adds the bearer scheme (built once, then kept)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            doc.setdefault("components", {})["securitySchemes"] = {
                SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "ETL_API_TOKEN; not needed when ETL_API_AUTH=none",
                },
            }
            for item in doc["paths"].values():
                for operation in item.values():
                    if "401" in operation.get("responses", {}):
                        operation["security"] = [{SCHEME: []}]
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
