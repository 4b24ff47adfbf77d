"""Dead letters of the ``dead`` stream: listed with their reasons, replayed onto their stream or dropped, audited.

An entry of the dead stream (``GroupReader.dead_letter``) holds ``run_id``, ``stream`` (where it came from), ``id``,
``group``, ``reason``, ``deliveries`` and the original fields prefixed ``f:``. Replaying adds those fields to the
stream they came from as a new entry and removes the dead letter, in one script (two replays of one entry add it
once). A page replayed after it was loaded adds nothing (the saver's page ledger). Every action adds an entry to
the audit stream ``Keys.dead_audit``: action, dead-letter id, run, stream, new id, actor, time and reason.
"""

from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

import redis

from etl_common import runs, streams
from etl_common.clock import utc_iso
from etl_common.keys import Keys

ACTIONS = ("replay", "drop", "expire")

# KEYS: dead stream, per-run counts, audit stream. ARGV: dead id, action, actor, time, allowed target streams...
# Returns {status, run_id, stream, new id}; status is "done", "missing" (not a dead letter any more),
# "empty" (nothing to replay) or "bad_stream" (its stream is not one of ours).
_MOVE = """
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #e == 0 then return {'missing', '', '', ''} end
local f = e[1][2]
local fields, target, run, reason = {}, '', '', ''
for i = 1, #f, 2 do
  local k, v = f[i], f[i + 1]
  if k == 'stream' then target = v elseif k == 'run_id' then run = v elseif k == 'reason' then reason = v end
  if string.sub(k, 1, 2) == 'f:' then table.insert(fields, string.sub(k, 3)); table.insert(fields, v) end
end
local new = ''
if ARGV[2] == 'replay' then
  local allowed = false
  for i = 5, #ARGV do if ARGV[i] == target then allowed = true end end
  if not allowed then return {'bad_stream', run, target, ''} end
  if #fields == 0 then return {'empty', run, target, ''} end
  new = redis.call('XADD', target, '*', unpack(fields))
end
redis.call('XDEL', KEYS[1], ARGV[1])
local tally = run
if tally == '' then tally = 'unknown' end
if redis.call('HINCRBY', KEYS[2], tally, -1) <= 0 then redis.call('HDEL', KEYS[2], tally) end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', 100000, '*', 'action', ARGV[2], 'dead_id', ARGV[1],
  'run_id', run, 'stream', target, 'new_id', new, 'actor', ARGV[3], 'at', ARGV[4], 'reason', reason)
return {'done', run, target, new}
"""


def _text(v: bytes | str) -> str:
    return streams.text(v)


def describe(entry_id: bytes | str, fields: dict[bytes, bytes]) -> dict[str, Any]:
    """One dead letter as JSON: its id, run, stream, original id, group, reason, deliveries and when it died."""
    get = {_text(k): _text(v) for k, v in fields.items() if not _text(k).startswith("f:")}
    eid = _text(entry_id)
    return {
        "id": eid,
        "run_id": get.get("run_id", ""),
        "stream": get.get("stream", ""),
        "entry_id": get.get("id", ""),
        "group": get.get("group", ""),
        "reason": get.get("reason", ""),
        "deliveries": int(get.get("deliveries") or 0),
        "dead_at": utc_iso(_moment(eid)),
        "bytes": sum(len(k) + len(v) for k, v in fields.items()),
    }


def _moment(entry_id: str) -> datetime:
    """When the entry was added: the milliseconds of its id."""
    return datetime.fromtimestamp(int(entry_id.split("-", 1)[0]) / 1000, timezone.utc)


def scan(client: redis.Redis, keys: Keys, batch: int = 500) -> Iterable[tuple[str, dict[bytes, bytes]]]:
    """Every dead letter, oldest first, read in batches (the stream may hold up to ~100,000 entries)."""
    start = "-"
    while True:
        got: Any = client.xrange(keys.dead_stream, min=start, max="+", count=batch)
        for entry_id, fields in got:
            yield _text(entry_id), fields
        if len(got) < batch:
            return
        start = "(" + _text(got[-1][0])


def listing(client: redis.Redis, keys: Keys, run_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    """Dead letters (of ``run_id`` when given), oldest first, at most ``limit``."""
    out: list[dict[str, Any]] = []
    for entry_id, fields in scan(client, keys):
        if run_id is not None and _text(fields.get(b"run_id", b"")) != run_id:
            continue
        out.append(describe(entry_id, fields))
        if len(out) >= limit:
            break
    return out


def select(client: redis.Redis, keys: Keys, ids: Iterable[str] = (), run_id: str | None = None) -> list[str]:
    """Dead-letter ids: those given, plus every one of ``run_id`` ("" with no ids and no run: none; "*": all)."""
    chosen = list(dict.fromkeys(ids))
    if run_id is not None:
        chosen += [
            eid
            for eid, fields in scan(client, keys)
            if run_id == "*" or _text(fields.get(b"run_id", b"")) == run_id
            if eid not in chosen
        ]
    return chosen


def act(client: redis.Redis, keys: Keys, action: str, ids: Iterable[str], actor: str) -> list[dict[str, str]]:
    """``replay``, ``drop`` or ``expire`` each dead letter of ``ids``; one result per id, each action audited.

    After a replay, each run whose pages went back gets a ``run_replayed`` event: the saver takes the run out of
    ``failed`` (it failed because those pages were dead-lettered) so it can complete once they load.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
    script = client.register_script(_MOVE)
    allowed = [keys.raw_stream, keys.processed_stream, keys.events_stream, keys.commands_stream]
    results, replayed_runs = [], set()
    for dead_id in ids:
        status, run, stream, new = (
            _text(v)
            for v in script(
                keys=[keys.dead_stream, keys.dead_counts, keys.dead_audit],
                args=[dead_id, action, actor, utc_iso(), *allowed],
            )
        )
        results.append({"id": dead_id, "status": status, "run_id": run, "stream": stream, "new_id": new})
        if status == "done" and action == "replay" and run and stream in (keys.raw_stream, keys.processed_stream):
            replayed_runs.add(run)
    for run in sorted(replayed_runs):
        runs.emit(client, keys.events_stream, runs.run_replayed(run, actor, utc_iso()))
    return results


def audit(client: redis.Redis, keys: Keys, limit: int = 100) -> list[dict[str, str]]:
    """The latest audit entries, newest first."""
    got: Any = client.xrevrange(keys.dead_audit, count=limit)
    return [{"audit_id": _text(i), **{_text(k): _text(v) for k, v in f.items()}} for i, f in got]
