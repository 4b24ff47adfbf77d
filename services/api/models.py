"""Response and request models: they document the API (OpenAPI) and are what the schema tests check.

Routes return pre-serialised orjson bytes for speed, so these models describe the answers rather
than build them; the schema tests check that the two agree.
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from etl_common.runs import USER_COLUMNS, common_columns

# Free text in a query string or path: no control characters. SQLite's text functions (LIKE,
# lower) stop at a NUL, so `q=a%00zzzz` searched like `q=a`; none of the searched columns hold one.
NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
NO_CONTROL_MESSAGE = "control characters (U+0000 to U+001F, U+007F) are not allowed"

# etl_common.runs.RunStatus's values, as a Literal for the schema (a test ties the two).
Status = Literal["running", "extracted", "transformed", "loaded", "upload_pending", "succeeded", "failed"]


class Error(BaseModel):
    detail: str


class RunFile(BaseModel):
    kind: Literal["raw", "processed", "dlq"]
    name: str
    bytes: int
    sha256: str
    records: int
    encrypted: bool
    remote_path: str | None
    uploaded_at: str | None


class Run(BaseModel):
    """A row of the header table (the seed's fields first) with its files."""

    id: int
    run_timestamp: str
    processed_file: str | None
    valid_count: int
    invalid_count: int
    run_id: str
    status: Status
    trigger: str | None
    started_at: str | None
    finished_at: str | None
    raw_count: int
    raw_file: str | None
    dlq_file: str | None
    total_expected: int | None
    error: str | None
    files: list[RunFile]


class RunDetail(Run):
    """One run with its progress and timings."""

    pages_expected: int | None
    pages_loaded: int
    updated_at: str | None
    duration_s: float | None = Field(description="finished_at - started_at, when both are known")
    dead_letters: int | None = Field(
        None, description="entries of this run moved to the dead-letter stream; null when Redis is unreachable"
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="what the run noticed without failing, e.g. the source's total changing between pages",
    )


class RunRequested(BaseModel):
    request_id: str
    status: Literal["accepted"]
    detail: str


def _user_fields(common: bool) -> dict[str, Any]:
    """The typed user columns the API shows (etl_common.runs.USER_COLUMNS): the shared ones required, the others
    defaulting to null (a table without them leaves them out)."""
    shared = {c.name for c in common_columns()}
    return {
        c.name: (c.python_type | None, ... if common else None)
        for c in USER_COLUMNS
        if c.api and (c.name in shared) == common
    }


Record = create_model(
    "Record",
    __doc__="Typed columns of a record and the stored record (masked, never with a password).",
    id=(int, ...),
    run_id=(str, ...),
    **_user_fields(common=True),
    inserted_at=(str, ...),
    **_user_fields(common=False),
    record=(Any, Field(description="the stored JSON record; null for a line that was not JSON")),
)


class RecordPage(BaseModel):
    items: list[Record]
    total: int
    limit: int
    offset: int


class DepartmentCount(BaseModel):
    department: str | None
    department_code: str | None
    count: int


class GenderCount(BaseModel):
    gender: str
    count: int


class BandCount(BaseModel):
    band: str
    count: int


class DeviceCount(BaseModel):
    device: Literal["desktop", "laptop", "mobile", "tablet", "unknown"]
    count: int


class RunCounts(BaseModel):
    id: int
    run_id: str
    run_timestamp: str
    status: Status
    valid_count: int
    invalid_count: int


class Summary(BaseModel):
    run_id: str | None = Field(description="the run summarised: the one asked for, else the latest with data")
    total: int
    by_department: list[DepartmentCount]
    by_gender: list[GenderCount]
    by_age_band: list[BandCount]
    by_device: list[DeviceCount]
    runs: list[RunCounts] = Field(description="valid and invalid counts of the latest runs, newest first")


class SqlQuery(BaseModel):
    # A misspelt or unsupported field (a row limit, bound parameters) is a 422 naming it, not silently ignored.
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=20_000, description="one read-only SELECT statement")


class SqlResult(BaseModel):
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool = Field(description="true when the row or size limit cut the result")
    elapsed_ms: float


class Health(BaseModel):
    status: str


class ColumnProfile(BaseModel):
    nulls: int
    blanks: int = Field(description="text values that are empty or only spaces")
    distinct: int = Field(description="distinct non-null values")


class AgeProfile(BaseModel):
    """Ages of the run's valid records."""

    count: int
    min: float | None
    max: float | None
    mean: float | None
    median: float | None
    bands: dict[str, int] = Field(description="records per age band: 18-24, 25-34, 35-44, 45-54, 55-65")


class DepartmentQuality(BaseModel):
    department: str | None
    code: str | None = Field(description="department_code; UNKNOWN for a department not in the lookup")
    count: int


class PreviousRun(BaseModel):
    """This run against the newest succeeded run before it."""

    run_id: str
    records: int
    invalid_rate: float
    invalid_rate_change: float = Field(description="this run's invalid_rate minus the previous one's")
    departments_change: dict[str, int] = Field(description="valid records per department code, this minus previous")


class QualityReport(BaseModel):
    """What an operator reads to decide whether a run can be trusted (computed by the saver once loaded)."""

    run_id: str
    computed_at: str
    records: int
    valid: int
    invalid: int
    invalid_rate: float = Field(description="invalid / records, 0 to 1")
    rules: dict[str, int] = Field(
        description="invalid records per broken rule (id, firstName, email, age, company.department, and record "
        "for a record that is not a JSON object); a record breaking two rules counts under both"
    )
    unclassified: int = Field(description="invalid records whose broken rules were not recorded")
    columns: dict[str, ColumnProfile] = Field(description="per typed column")
    age: AgeProfile
    departments: list[DepartmentQuality]
    previous: PreviousRun | None
    schema_: "SchemaSummary | None" = Field(
        None, alias="schema", description="drift and contract; null for a run loaded before they were recorded"
    )


class SchemaField(BaseModel):
    """One field path of the users (``company.address.city``; array items as ``path[]``) as the run saw it."""

    types: dict[str, int] = Field(description="values per JSON type (string, integer, number, boolean, null, ...)")
    present: int = Field(description="users holding the field")
    nulls: int
    missing: int = Field(description="users without the field")
    null_rate: float = Field(description="(nulls + missing) / users, 0 to 1")


class ContractViolation(BaseModel):
    expected: str = Field(description="the contract's type, or 'absent' for a field it does not know")
    got: dict[str, int] = Field(description="what the records held instead, with counts")


class ContractReport(BaseModel):
    """How the run's records kept to the data contract (docs/contracts.md)."""

    name: str
    policy: Literal["evolve", "freeze", "discard_value"]
    records: int = Field(description="records that broke the contract")
    discarded: int = Field(description="values dropped (policy discard_value)")
    violations: dict[str, ContractViolation]


class DriftChange(BaseModel):
    """A change of the observed schema against the previous succeeded run."""

    change: Literal["added", "removed", "type_changed", "null_rate"]
    field: str
    before: list[str] | float | None
    after: list[str] | float | None


class ObservedSchema(BaseModel):
    """The observed schema of a run's users, its contract report and its drift."""

    run_id: str
    computed_at: str
    records: int = Field(description="users (JSON objects) observed")
    pages: int
    fields: dict[str, SchemaField]
    contract: ContractReport | None
    previous_run_id: str | None = Field(description="the succeeded run compared with; null for the first")
    drift: list[DriftChange]


class SchemaSummary(BaseModel):
    """The schema part of the quality report: what changed and the contract (fields: GET /etl_runs/{id}/schema)."""

    fields: int
    previous_run_id: str | None
    drift: list[DriftChange]
    contract: ContractReport | None


QualityReport.model_rebuild()  # its schema field refers to SchemaSummary, defined after it
