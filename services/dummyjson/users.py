"""Deterministic users with DummyJSON's full record shape, plus a catalogue of broken records."""

import copy
import random
from typing import Any

DEPARTMENTS = [
    "Accounting",
    "Business Development",
    "Engineering",
    "Human Resources",
    "Legal",
    "Marketing",
    "Product Management",
    "Research and Development",
    "Sales",
    "Services",
    "Support",
    "Training",
]
_FIRST = [
    "Emily",
    "Michael",
    "Sophia",
    "James",
    "Emma",
    "Olivia",
    "Alexander",
    "Ava",
    "Ethan",
    "Isabella",
    "Liam",
    "Mia",
    "Noah",
    "Chloe",
    "Lucas",
    "Zoé",
    "Mateo",
    "Aiko",
    "Omar",
    "Léa",
]
_LAST = [
    "Johnson",
    "Williams",
    "Brown",
    "Miller",
    "Davis",
    "Garcia",
    "Rodriguez",
    "Wilson",
    "Martinez",
    "Anderson",
    "Taylor",
    "Thomas",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Müller",
]
_CITIES = [
    ("Phoenix", "Mississippi", "MS"),
    ("Denver", "Colorado", "CO"),
    ("Austin", "Texas", "TX"),
    ("Seattle", "Washington", "WA"),
    ("Boston", "Massachusetts", "MA"),
]
_AGENTS = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/96.0.4664.93 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/97.0.4692.71 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 15_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/15.2 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPad; CPU OS 15_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/15.2 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 12; Pixel 6) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/97.0.4692.98 Mobile Safari/537.36",
]


def _address(rng: random.Random) -> dict[str, Any]:
    city, state, code = rng.choice(_CITIES)
    return {
        "address": f"{rng.randint(1, 9999)} Main Street",
        "city": city,
        "state": state,
        "stateCode": code,
        "postalCode": f"{rng.randint(10000, 99999)}",
        "coordinates": {"lat": round(rng.uniform(-90, 90), 6), "lng": round(rng.uniform(-180, 180), 6)},
        "country": "United States",
    }


def make_user(user_id: int, seed: int = 0) -> dict[str, Any]:
    """User ``user_id``: the same every time for the same seed."""
    rng = random.Random(seed * 1_000_003 + user_id)
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    username = f"{first.lower()}{last.lower()[:1]}{user_id}"
    year = rng.randint(1961, 2006)
    return {
        "id": user_id,
        "firstName": first,
        "lastName": last,
        "maidenName": rng.choice(["", "Smith", "Jones"]),
        "age": 2025 - year,
        "gender": rng.choice(["female", "male"]),
        "email": f"{username}@x.dummyjson.com",
        "phone": f"+{rng.randint(1, 99)} {rng.randint(100, 999)}-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}",
        "username": username,
        "password": f"{username}pass",
        "birthDate": f"{year}-{rng.randint(1, 12)}-{rng.randint(1, 28)}",
        "image": f"https://dummyjson.com/icon/{username}/128",
        "bloodGroup": rng.choice(["A+", "A-", "B+", "B-", "O+", "O-", "AB+", "AB-"]),
        "height": round(rng.uniform(150, 200), 2),
        "weight": round(rng.uniform(45, 110), 2),
        "eyeColor": rng.choice(["Green", "Brown", "Blue", "Gray", "Amber"]),
        "hair": {
            "color": rng.choice(["Brown", "Black", "Blond", "Red"]),
            "type": rng.choice(["Curly", "Straight", "Wavy", "Kinky"]),
        },
        "ip": ".".join(str(rng.randint(1, 254)) for _ in range(4)),
        "address": _address(rng),
        "macAddress": ":".join(f"{rng.randint(0, 255):02x}" for _ in range(6)),
        "university": rng.choice(
            ["University of Wisconsin--Madison", "Ohio State University", "University of Arizona"]
        ),
        "bank": {
            "cardExpire": f"{rng.randint(1, 12):02d}/{rng.randint(26, 32)}",
            "cardNumber": "".join(str(rng.randint(0, 9)) for _ in range(16)),
            "cardType": rng.choice(["Visa", "Mastercard", "American Express", "JCB"]),
            "currency": rng.choice(["USD", "EUR", "GBP"]),
            "iban": "GB" + "".join(rng.choice("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(20)),
        },
        "company": {
            "department": DEPARTMENTS[(user_id - 1) % len(DEPARTMENTS)],
            "name": f"{rng.choice(_LAST)}, {rng.choice(_LAST)} and {rng.choice(_LAST)}",
            "title": rng.choice(["Sales Manager", "Web Developer", "Accountant", "Support Specialist"]),
            "address": _address(rng),
        },
        "ein": f"{rng.randint(100, 999)}-{rng.randint(100, 999)}",
        "ssn": f"{rng.randint(100, 999)}-{rng.randint(100, 999)}-{rng.randint(100, 999)}",
        "userAgent": rng.choice(_AGENTS),
        "crypto": {
            "coin": "Bitcoin",
            "wallet": "0x" + "".join(rng.choice("0123456789abcdef") for _ in range(40)),
            "network": "Ethereum (ERC20)",
        },
        "role": rng.choice(["user", "user", "user", "moderator", "admin"]),
    }


def _set(user: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    node = user
    *parents, leaf = path.split(".")
    for p in parents:
        node = node[p]
    if value is DELETE:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return user


DELETE = object()
"""The value that removes a field, in ``changed`` and ``BREAKAGES``."""


def changed(user: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``user`` with ``changes`` (dotted path -> value; ``DELETE`` removes the field) applied."""
    out = copy.deepcopy(user)
    for path, value in changes.items():
        _set(out, path, value)
    return out


# Each breaks the named rules of a valid user; used by --bad-every and the fault tests.
BREAKAGES: list[tuple[str, list[tuple[str, Any]]]] = [
    ("age below 18", [("age", 17)]),
    ("age above 65", [("age", 66)]),
    ("email missing", [("email", DELETE)]),
    ("email malformed", [("email", "not-an-email")]),
    ("first name blank", [("firstName", "   ")]),
    ("id not an integer", [("id", "abc")]),
    ("department empty", [("company.department", "")]),
    ("age not a number", [("age", "thirty")]),
    ("everything broken", [("age", 12), ("email", None), ("firstName", ""), ("company.department", None)]),
]


def make_bad_user(user_id: int, kind: int, seed: int = 0) -> dict[str, Any]:
    """User ``user_id`` broken in the way ``BREAKAGES[kind % len]`` describes."""
    return break_user(make_user(user_id, seed), kind)


def break_user(user: dict[str, Any], kind: int) -> dict[str, Any]:
    """``user`` (changed in place) broken in the way ``BREAKAGES[kind % len]`` describes."""
    for path, value in BREAKAGES[kind % len(BREAKAGES)][1]:
        _set(user, path, value)
    return user


def clone_user(template: dict[str, Any], user_id: int) -> dict[str, Any]:
    """User ``user_id`` made from another user's record: ~30x cheaper than ``make_user``, for large benchmarks.

    The fields that identify a user (id, username, email, password, image, department) are its own;
    the nested objects a breakage may change are copied, the others shared (they are only serialised).
    """
    first, last = template["firstName"], template["lastName"]
    username = f"{first.lower()}{last.lower()[:1]}{user_id}"
    return {
        **template,
        "id": user_id,
        "email": f"{username}@x.dummyjson.com",
        "username": username,
        "password": f"{username}pass",
        "image": f"https://dummyjson.com/icon/{username}/128",
        "company": {**template["company"], "department": DEPARTMENTS[(user_id - 1) % len(DEPARTMENTS)]},
    }
