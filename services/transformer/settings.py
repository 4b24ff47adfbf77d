"""Transformer settings."""

from pydantic import Field

from etl_common.settings import BaseEtlSettings


class TransformerSettings(BaseEtlSettings):
    """Lookup file, policies and batching."""

    # CSV with department_name,department_code; empty means the copy shipped with the transformer.
    departments_csv: str = ""
    # What happens to a record whose department is not in the lookup: code UNKNOWN, or invalid.
    unknown_department: str = Field("unknown", pattern="^(unknown|reject)$")
    # Sensitive fields (ssn, ein, bank.cardNumber, bank.iban, crypto.wallet): mask, drop or keep.
    pii_policy: str = Field("mask", pattern="^(mask|drop|keep)$")
    # The data contract (a JSON Schema file); empty means the one shipped for DummyJSON users (docs/contracts.md).
    contract_path: str = ""
    # A record breaking the contract: evolve (load it, report), freeze (invalid), discard_value (drop the values).
    contract_policy: str = Field("evolve", pattern="^(evolve|freeze|discard_value)$")
    # Pages read per XREADGROUP call.
    batch_pages: int = Field(10, ge=1, le=1000)
    # Lifetime of a run's page tally in Redis.
    run_state_ttl_s: int = Field(7 * 86_400, ge=60)
