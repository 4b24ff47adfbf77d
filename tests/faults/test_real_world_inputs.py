"""Inputs from public bug reports: every record of a bad shape is accounted for, the run goes on, no secret leaks."""

import base64
import secrets
from pathlib import Path

import httpx
import orjson

import testbed as tb
from dummyjson.users import make_user
from tests.faults.conftest import wait_for
from tests.integration.test_api import Api
from tests.support import Pipeline, lines

_PW, _SSN = "pw-", "ssn-"


def _secrets() -> tuple[str, str]:
    """A password and an SSN unique to one record (long enough never to match by chance)."""
    return _PW + secrets.token_hex(8), _SSN + secrets.token_hex(8)


def _user(uid, **fields) -> tuple[dict, list[str]]:
    user = make_user(uid if isinstance(uid, int) and 0 < uid < 10_000 else 7)
    user["id"] = uid
    pw, ssn = _secrets()
    user["password"], user["ssn"] = pw, ssn
    user.update(fields)
    return user, [pw, ssn]


def _text(user: dict, **raw: str) -> bytes:
    """``user`` as JSON with some fields' values replaced by raw JSON text (what a strict writer cannot write)."""
    for key in raw:
        user[key] = f"@@{key}@@"
    text = orjson.dumps(user)
    for key, value in raw.items():
        text = text.replace(orjson.dumps(f"@@{key}@@"), value.encode("latin-1"))
    return text


def corpus() -> tuple[list[tuple[bytes, str | None]], list[str]]:
    """(record text, expected error_reason or None when valid) and every secret the records hold."""
    items: list[tuple[bytes, str | None]] = []
    found: list[str] = []

    def add(text: bytes, reason: str | None, secret_values: list[str]) -> None:
        items.append((text, reason))
        found.extend(secret_values)

    for uid in (1, 2, 3):
        u, s = _user(uid)
        add(orjson.dumps(u), None, s)
    u, s = _user(10)
    add(
        _text(u, firstName=r'"Dana \ud83d"'),
        "firstName: not valid Unicode (lone surrogate U+D83D, half of a character)",
        s,
    )
    u, s = _user(11)
    add(_text(u, lastName=r'"x\ude00y"'), "lastName: not valid Unicode (lone surrogate U+DE00, half of a character)", s)
    u, s = _user(12)
    add(_text(u, lastName='"M\xc3(ller"'), "lastName: not valid Unicode (byte 0xC3 is not UTF-8", s)
    u, s = _user(13)
    add(_text(u, age="NaN"), "age: NaN is not a number", s)
    u, s = _user(14)
    add(_text(u, weight="Infinity"), "weight: Infinity is not a number", s)
    u, s = _user(15)
    add(_text(u, bank='{"cardExpire": -Infinity}'), "bank.cardExpire: -Infinity is not a number", s)
    u, s = _user(16)
    add(_text(u, meta="[" * 300 + "]" * 300), "meta: nested deeper than 64 levels", s)
    u, s = _user(17)
    add(_text(u, hair='{"a":' * 5000 + "1" + "}" * 5000), "hair: nested deeper than 64 levels", s)
    u, s = _user(18)
    add(_text(u, meta="[" * 64 + "]" * 64), "meta: nested deeper than 64 levels", s)  # 65 levels with the record
    u, s = _user(19, meta=[[[[[["deep but fine"]]]]]])
    add(orjson.dumps(u), None, s)
    u, s = _user(20)
    add(orjson.dumps(orjson.dumps(u).decode()), "got a string holding an object (double-encoded JSON)", s)
    u1, s1 = _user(21)
    u2, s2 = _user(22)
    add(orjson.dumps(orjson.dumps([u1, u2]).decode()), "got a string holding an array (double-encoded JSON)", s1 + s2)
    u1, s1 = _user(23)
    u2, s2 = _user(24)
    add(orjson.dumps([u1, u2]), "record: expected a JSON object, got list", s1 + s2)
    for text, kind in ((b"42", "int"), (b"true", "bool"), (b"null", "NoneType"), (b"-1.5e3", "float")):
        add(text, f"record: expected a JSON object, got {kind}", [])
    u, s = _user(2**63)
    add(orjson.dumps(u), "id: 9223372036854775808 is outside the 64-bit integer range", s)
    u, s = _user(30)
    add(_text(u, id="-9223372036854775809"), "id: -9223372036854775809 is outside the 64-bit integer range", s)
    u, s = _user(31)
    add(_text(u, id="18446744073709551616"), "id: 18446744073709551616 is outside the 64-bit integer range", s)
    u, s = _user(2**63 - 1)
    add(orjson.dumps(u), None, s)
    u, s = _user(32)
    add(
        _text(u, height="0.1000000000000000055511151231257827"),
        "height: 0.1000000000000000055511151231257827 has more digits than a 64-bit float holds",
        s,
    )
    u, s = _user(33)
    add(_text(u, weight="1e400"), "weight: 1e400 is beyond the range of a 64-bit float", s)
    u, s = _user(34)
    card = "123456789012345678901234"
    add(
        _text(u, bank=f'{{"cardNumber": {card}}}'),
        "bank.cardNumber: the value is outside the 64-bit integer range",
        [*s, card],
    )
    u, s = _user(35)
    add(_text(u, age="2.5e1"), None, s)  # an exponent takes the exact reader; the record stays valid
    u, s = _user(36)
    add(_text(u, password='"pw\xff\xfe-' + s[0] + '"'), "password: not valid Unicode (byte 0xFF is not UTF-8", s)
    # Secrets in other shapes and spellings, in records that are otherwise valid: none of them is kept.
    card, iban, wallet = (secrets.token_hex(10) for _ in range(3))
    u, s = _user(37, bank=orjson.dumps({"cardNumber": "c" + card, "iban": "i" + iban}).decode())
    add(orjson.dumps(u), None, [*s, card, iban])
    u, s = _user(38, crypto=[{"wallet": "0x" + wallet}])
    add(orjson.dumps(u), None, [*s, wallet])
    pw, ssn = _secrets()
    u, s = _user(39, Password=pw, SSN=ssn, extra={"password": pw + "x", "nested": [{"S_S_N": ssn}]})
    add(orjson.dumps(u), None, [*s, pw, ssn])
    card = secrets.token_hex(10)
    u, s = _user(40, bank={"cardNumber": ["n" + card, {"CARD_NUMBER": "m" + card}], "iban": 12345678901234})
    add(orjson.dumps(u), None, [*s, card, "12345678901234"])
    return items, found


def page(items: list[bytes], total: int) -> bytes:
    return b'{"users":[' + b",".join(items) + b'],"total":%d,"skip":0,"limit":%d}' % (total, len(items))


def scan(
    p: Pipeline, extra_texts: dict[str, str], found: list[str], redis_dir: Path | None = None
) -> list[tuple[str, str]]:
    """Where any of ``found`` shows: the database files, local files, uploads, service logs, API answers and
    (``redis_dir``) Redis's append-only file, which keeps what stream entries held after they are deleted."""
    places: dict[str, bytes] = {f"db:{f.name}": f.read_bytes() for f in p.db_path.parent.glob("data.db*")}
    for root in (p.data_dir, p.upload_dir, p.logdir, *([redis_dir] if redis_dir else [])):
        places |= {str(f): f.read_bytes() for f in Path(root).rglob("*") if f.is_file()}
    places |= {k: v.encode("utf-8", "surrogatepass") for k, v in extra_texts.items()}
    assert any(k.startswith("db:") for k in places) and len(places) > 5
    return [(where, value[:6] + "...") for where, data in places.items() for value in found if value.encode() in data]


def source_secrets(src, count: int) -> list[str]:
    """The passwords and unmasked SSNs of a generated source's users."""
    users = [src.source.user(i) for i in range(count)]
    return [u["password"] for u in users] + [u["ssn"] for u in users]


def test_every_bad_value_shape_is_accounted_for_and_no_secret_leaks(make_source, make_pipeline, redis_server):
    items, found = corpus()
    tail = 10  # a normal page after the bad one: the run goes on
    src = make_source(count=len(items) + tail)
    body = page([t for t, _ in items], len(items) + tail)
    src.faults([{"skip": 0, "status": 200, "times": -1, "body_b64": base64.b64encode(body).decode()}])
    p = make_pipeline(src, ETL_PAGE_SIZE="100")
    p.start_workers()
    api = Api(p, "api")
    done = p.extract()
    assert done.returncode == 0, done.stdout + done.stderr
    run = p.wait_run()
    rid = run["run_id"]

    expected_invalid = {pos: reason for pos, (_, reason) in enumerate(items) if reason is not None}
    n_valid = len(items) - len(expected_invalid) + tail
    assert (run["status"], run["raw_count"], run["valid_count"], run["invalid_count"], run["error"]) == (
        "succeeded",
        len(items) + tail,
        n_valid,
        len(expected_invalid),
        None,
    )
    assert (p.count("raw_users", rid), p.count("processed_users", rid), p.count("invalid_users", rid)) == (
        len(items) + tail,
        n_valid,
        len(expected_invalid),
    )
    with p.db() as db:
        invalid = {
            r["position"]: r for r in db.execute("SELECT * FROM invalid_users WHERE run_id=? AND page=0", (rid,))
        }
        raw = {
            r["position"]: r["record"] for r in db.execute("SELECT * FROM raw_users WHERE run_id=? AND page=0", (rid,))
        }
        max_id = db.execute("SELECT user_id FROM processed_users WHERE user_id > 2147483647").fetchall()
    assert set(invalid) == set(expected_invalid)
    for pos, reason in expected_invalid.items():
        assert reason in invalid[pos]["error_reason"], (pos, invalid[pos]["error_reason"], reason)
    assert [r[0] for r in max_id] == [2**63 - 1]
    # Every number as the source wrote it, in the raw copy and the DLQ line.
    for needle in ("18446744073709551616", "-9223372036854775809", "0.1000000000000000055511151231257827", "1e400"):
        assert any(needle in (r or "") for r in raw.values()), needle
        assert any(needle in (r["raw_line"] or "") for r in invalid.values()), needle
    # The masked card number of the huge integer is there, its digits not.
    assert any("********************1234" in (r["raw_line"] or "") for r in invalid.values())
    dlq = lines(p.data_dir / run["dlq_file"])
    assert len(dlq) == len(expected_invalid) and all(d["error_reason"] for d in dlq)
    assert (p.upload_dir / run["dlq_file"]).read_bytes() == (p.data_dir / run["dlq_file"]).read_bytes()
    assert p.procs["transformer"].alive() and p.procs["saver"].alive()

    answers = {
        url: api.get(url).text
        for url in (
            f"/etl_runs/{rid}",
            f"/data/raw_users?run_id={rid}&limit=500",
            f"/data/invalid_users?run_id={rid}&limit=500",
            f"/data/processed_users?run_id={rid}&limit=500",
        )
    }
    assert all(orjson.loads(a) for a in answers.values())
    logs = {f"log:{n}": proc.output() for n, proc in p.procs.items()} | {"log:extract": done.stdout + done.stderr}
    assert "record quarantined" in logs["log:extract"]
    assert not scan(p, answers | logs, found, redis_server.dir)
    # The scan does read every place: a value that is kept shows in the database, files, uploads and API.
    hits = [where for where, _ in scan(p, answers, ["Dana"])]
    assert any(w.startswith("db:") for w in hits) and any(w.startswith("/data/") for w in hits)
    assert any(w.startswith(str(p.data_dir)) for w in hits) and any(w.startswith(str(p.upload_dir)) for w in hits)
    api.client.close()


def test_an_unexpected_error_fails_the_run_with_its_reason(make_source, make_pipeline, monkeypatch):
    """The generic rule: an exception nobody foresaw records the run's error and a failure event, never `running`."""
    from extractor.run import RunFailed, extract
    from extractor.settings import ExtractorSettings

    src = make_source(count=250)
    p = make_pipeline(src)
    p.start("saver")
    for name, value in p.env().items():
        monkeypatch.setenv(name, value)  # the settings the extractor process would read
    settings = ExtractorSettings()
    calls = []

    def beat() -> None:  # the heartbeat hook the service passes; here it fails after the first page
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("heartbeat broke")

    try:
        extract(settings, p.redis, "manual", beat=beat)
    except RunFailed as exc:
        error = str(exc)
    else:
        raise AssertionError("the run did not fail")
    assert "RuntimeError: heartbeat broke" in error
    run = p.wait_run(("failed",))
    assert run["error"] == error and "page 1 (skip=100)" in error
    events = [orjson.loads(f[b"data"]) for _, f in p.redis.xrange(p.keys.events_stream)]
    assert [e["type"] for e in events] == ["run_started", "extract_failed"]
    # A resume finishes the same run from its checkpoint.
    p.start("transformer")
    assert p.extract().returncode == 0
    done = p.wait_run(run_id=run["run_id"])
    assert (done["status"], done["raw_count"], done["valid_count"], done["error"]) == ("succeeded", 250, 250, None)
    assert (p.count("raw_users", run["run_id"]), p.count("invalid_users", run["run_id"])) == (250, 0)
    logs = {f"log:{n}": proc.output() for n, proc in p.procs.items()}
    assert not scan(p, logs, source_secrets(src, 250))


def test_source_total_changing_is_a_run_warning(make_source, make_pipeline):
    """total shrinks between pages (users deleted): the run succeeds and says so in etl_runs, the API and a metric."""
    src = make_source(count=350)
    src.faults(total_delta=-120, total_delta_after=1)  # from the second request on, total says 230
    p = make_pipeline(src, ETL_PAGE_SIZE="100")
    p.start_workers()
    api = Api(p, "api")
    ops = tb.free_port()
    p.start("extractor", ETL_RUN_ON_START="true", ETL_OPS_PORT=str(ops), ETL_OPS_HOST="127.0.0.1")
    run = p.wait_run()
    assert (run["status"], run["raw_count"], run["total_expected"]) == ("succeeded", 300, 230)
    expected = [
        "source total changed from 350 to 230 at page 1 (skip=100): users added or deleted during the run "
        "may be missed or fetched twice",
        "fetched 300 users but the source's total says 230",
    ]
    assert orjson.loads(run["warnings"]) == expected
    assert api.get(f"/etl_runs/{run['run_id']}").json()["warnings"] == expected
    metrics = httpx.get(f"http://127.0.0.1:{ops}/metrics", timeout=10).text
    assert 'etl_run_warnings_total{kind="source_total_changed"} 1.0' in metrics
    assert 'etl_run_warnings_total{kind="records_differ_from_total"} 1.0' in metrics

    # A run where nothing changes has no warnings.
    src.faults()
    p.procs["extractor"].stop()
    assert p.extract().returncode == 0
    clean = p.wait_run(run_id=p.runs()[-1]["run_id"])
    assert clean["run_id"] != run["run_id"] and clean["warnings"] is None
    assert api.get(f"/etl_runs/{clean['run_id']}").json()["warnings"] == []
    detail = api.get(f"/etl_runs/{run['run_id']}").text
    api.client.close()
    logs = {f"log:{n}": proc.output() for n, proc in p.procs.items()}
    assert not scan(p, {"api": detail, **logs}, source_secrets(src, 350))


def test_an_entry_a_stage_gives_up_on_fails_its_run_with_the_reason(make_source, make_pipeline):
    """A raw-stream entry of the run that no transformer can handle: the run is failed with why, not left waiting."""
    src = make_source(count=150)
    p = make_pipeline(src)
    p.start("saver")
    assert p.extract().returncode == 0
    run = p.wait_run(("extracted",))
    # Page 1 of the run as an entry no transformer can handle (no records): without it the run cannot complete.
    (page1,) = [i for i, f in p.redis.xrange(p.keys.raw_stream) if orjson.loads(f[b"data"]).get("page") == 1]
    p.redis.xdel(p.keys.raw_stream, page1)
    p.redis.xadd(p.keys.raw_stream, {"data": orjson.dumps({"kind": "page", "run_id": run["run_id"], "page": 1})})
    p.start("transformer")
    failed = p.wait_run(("failed",), run_id=run["run_id"])
    assert failed["error"] == (
        "transform: a raw-stream entry was dead-lettered: malformed entry: KeyError: 'records'"
    ), failed["error"]
    assert p.procs["transformer"].alive() and p.procs["saver"].alive()
    wait_for(lambda: p.redis.xlen(p.keys.raw_stream) == 0 and p.redis.xlen(p.keys.processed_stream) == 0)
    final = p.wait_run(("failed",), run_id=run["run_id"])
    assert (final["raw_count"], p.count("raw_users", run["run_id"]), final["error"]) == (100, 100, failed["error"])
