"""The data contract: loading it, its fast path against jsonschema, the three policies and the observed schema."""

import copy
import json
import subprocess
import sys

import pytest

import testbed as tb
from dummyjson.users import make_user
from tests.support import real_users
from transformer.contract import DEFAULT_CONTRACT, ContractError, PageSchema, fields, load_contract
from transformer.enrich import load_departments
from transformer.transform import transform_page

USERS = real_users() or [make_user(i) for i in range(1, 101)]


def drifted(user: dict) -> dict:
    """A field added, one dropped, ``age`` as text, a nested unknown field and a null where a number belongs."""
    user = copy.deepcopy(user)
    user["nickname"] = "Em"
    del user["maidenName"]
    user["age"] = str(user["age"])
    user["hair"]["shine"] = "high"
    user["address"]["coordinates"]["lat"] = None
    return user


@pytest.mark.parametrize("policy", ["evolve", "freeze", "discard_value"])
def test_shipped_contract_accepts_every_real_and_generated_user(policy):
    contract = load_contract("", policy)
    page = PageSchema(contract)
    for user in [*USERS, *(make_user(i, 7) for i in range(1, 50))]:
        record, problems = page.take(copy.deepcopy(user))
        assert problems == [] and record == user
    assert page.summary()["contract"]["records"] == 0


def test_fast_path_agrees_with_jsonschema_on_every_shape():
    """The fast path says 'conforms' only where a full validation finds nothing; it defers on 30.0 (an integer to
    JSON Schema) to jsonschema, which is the judge."""
    contract = load_contract("", "evolve")
    cases = [*USERS[:20], drifted(USERS[0]), {**USERS[1], "age": 30.0}, {**USERS[2], "age": True}, {}]
    cases += [{**USERS[3], "tags": ["a", 1]}, {**USERS[4], "company": "Acme"}, {**USERS[5], "id": None}]
    for record in cases:
        fast, full = contract.conforms(fields(record)), contract.violations(record) == []
        assert fast == full or (not fast and record["age"] == 30.0), record


def test_freeze_names_each_field_and_expected_type():
    page = PageSchema(load_contract("", "freeze"))
    _, problems = page.take(drifted(USERS[0]))
    assert sorted(problems) == [
        "address.coordinates.lat: null where contract users.v1 expects number",
        "age: string where contract users.v1 expects integer",
        "hair.shine: unknown field (not in contract users.v1)",
        "nickname: unknown field (not in contract users.v1)",
    ]
    assert {p.rule for p in problems} == {"contract"}


def test_freeze_makes_the_record_invalid_and_evolve_loads_it():
    departments = load_departments()
    records = [drifted(USERS[0]), copy.deepcopy(USERS[1])]
    frozen = transform_page(copy.deepcopy(records), departments, contract=load_contract("", "freeze"))
    assert [i["pos"] for i in frozen["invalid"]] == [0] and "contract" in frozen["invalid"][0]["rules"]
    assert "age: string where contract users.v1 expects integer" in frozen["invalid"][0]["error_reason"]
    # The business rule on age takes text as "not a number" under every policy: evolve loads only what they accept.
    evolved = transform_page(copy.deepcopy(records), departments, contract=load_contract("", "evolve"))
    assert evolved["invalid"][0]["rules"] == ["age"]
    assert evolved["raw"][0]["nickname"] == "Em"
    records[0]["age"] = 30  # the other changes only
    evolved = transform_page(copy.deepcopy(records), departments, contract=load_contract("", "evolve"))
    assert [v["pos"] for v in evolved["valid"]] == [0, 1]
    checked = evolved["schema"]["contract"]
    assert checked["records"] == 1
    assert set(checked["violations"]) == {"nickname", "hair.shine", "address.coordinates.lat"}


def test_discard_value_drops_the_offending_values_and_reports_them():
    page = PageSchema(load_contract("", "discard_value"))
    record, problems = page.take(drifted(USERS[0]))
    assert problems == []
    assert "nickname" not in record and "age" not in record and "shine" not in record["hair"]
    assert "lat" not in record["address"]["coordinates"] and record["firstName"] == USERS[0]["firstName"]
    summary = page.summary()["contract"]
    assert summary["discarded"] == 4 and summary["violations"]["age"] == {"expected": "integer", "got": {"string": 1}}


def test_observed_schema_counts_types_nulls_missing_and_array_items():
    page = PageSchema(None)
    for record in [
        {"a": 1, "b": {"c": None}, "tags": [{"x": 1}, {"x": "y"}]},
        {"a": 1.5, "b": {"c": "s"}},
        {"b": {}, "tags": []},
    ]:
        page.take(record)
    page.take("not an object")
    f = page.summary()["fields"]
    assert page.summary()["records"] == 3
    assert f["a"] == {"present": 2, "types": {"integer": 1, "number": 1}}
    assert f["b.c"] == {"present": 2, "types": {"null": 1, "string": 1}}
    assert f["tags"] == {"present": 2, "types": {"array": 2}}
    assert f["tags[]"] == {"present": 1, "types": {"object": 2}}
    assert f["tags[].x"] == {"present": 1, "types": {"integer": 1, "string": 1}}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("{not json", "not JSON"),
        ('{"type": "object", "properties": {"age": {"type": "integr"}}}', "not a valid JSON Schema at properties/age"),
        ('{"type": "array"}', '"type": "object"'),
        ("[]", '"type": "object"'),
    ],
)
def test_a_wrong_contract_is_refused_with_one_line(tmp_path, text, words):
    path = tmp_path / "users.v9.json"
    path.write_text(text)
    with pytest.raises(ContractError, match=words):
        load_contract(path, "freeze")


def test_transformer_refuses_a_wrong_contract_at_start_with_exit_2(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"type": "object", "additionalProperties": 3}')
    env = {"ETL_CONTRACT_PATH": str(path), "ETL_REDIS_URL": "redis://127.0.0.1:1/0", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "transformer"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("invalid setting: ETL_CONTRACT_PATH: contract ")
    assert str(path) in lines[0]


def test_shipped_contract_is_the_package_data_file():
    assert json.loads(DEFAULT_CONTRACT.read_text())["$id"] == "urn:etl-users:contract:users:v1"
    assert tb.ROOT.joinpath("services/transformer/contracts/users.v1.json").samefile(DEFAULT_CONTRACT)


def test_other_keywords_are_enforced_without_quoting_the_value(tmp_path):
    """A contract with a pattern on ssn: the reason names the field and the rule, never the (personal) value."""
    schema = json.loads(DEFAULT_CONTRACT.read_text())
    schema["properties"]["ssn"] = {"type": "string", "pattern": "^[0-9]{3}-[0-9]{2}-[0-9]{4}$"}
    path = tmp_path / "users.v2.json"
    path.write_text(json.dumps(schema))
    contract = load_contract(path, "freeze")
    assert not contract.exact  # pattern is beyond the fast path: every record is validated fully
    _, problems = PageSchema(contract).take({**USERS[0], "ssn": "secret-123"})
    assert problems == ['ssn: breaks contract users.v2: pattern "^[0-9]{3}-[0-9]{2}-[0-9]{4}$"']
    assert PageSchema(contract).take({**USERS[0], "ssn": "123-45-6789"})[1] == []


def test_the_chart_ships_the_same_contract():
    """charts/etl/files/ holds a copy (a chart reads only its own folder): it must not drift from the shipped one."""
    assert (tb.ROOT / "charts/etl/files/contract-users.v1.json").read_bytes() == DEFAULT_CONTRACT.read_bytes()
