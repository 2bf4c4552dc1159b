"""Run by tests/client/test_wheel.py with the python of a fresh virtualenv holding only the
``tokenpool-tome-client`` wheel (and its httpx/tenacity dependencies); standard library + the
wheel only, no test helpers. Prints one JSON object on its last line.

    python -I wheel_smoke.py pool      BASE_URL API_KEY POOL TOME_URL TOME_TOKEN NS1 NS2
    python -I wheel_smoke.py fallback  BASE_URL API_KEY POOL TOME_URL TOME_TOKEN NS1 NS2 INTERNAL EXTERNAL
"""
from __future__ import annotations

import importlib.util
import json
import sys

import tokenpool_tome
from tokenpool_tome import CLIENT_DIRECT, HttpTokenizationLibrary, TokenPair, TokenPoolClient, TomeClientConfig


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"FAILED: {what}")


def main() -> None:
    phase, base_url, api_key, pool, tome_url, tome_token, ns1, ns2, *rest = sys.argv[1:]
    # The wheel stands alone: no Django, no service code, imported from the venv, not the repo.
    check(importlib.util.find_spec("django") is None, "django is not installed")
    check(importlib.util.find_spec("core") is None, "no 'core' package is installed")
    check("site-packages" in tokenpool_tome.__file__, f"tokenpool_tome comes from the venv ({tokenpool_tome.__file__})")

    tome = HttpTokenizationLibrary(TomeClientConfig(base_url=tome_url, api_token=tome_token, ns1=ns1, ns2=ns2,
                                                    read_timeout=30.0))
    with TokenPoolClient(base_url, api_key, pool=pool, tome=tome, timeout=30.0,
                         sleep=lambda _: None) as client:
        if phase == "pool":
            reservation = client.reserve(owner_ref="wheel-card")
            check(reservation.source == "pool" and reservation.status == "RESERVED", "reserved from the pool")
            confirmed = client.confirm(reservation.reservation_id)
            check(confirmed.status == "USED", "confirmed")
            check(client.lookup(reservation.internal_token) == reservation.pair, "lookup")
            check(client.detokenize(reservation.external_ref_id) == reservation.pair, "detokenize")
            check(client.lookup("0000000000000000") is None, "unknown lookup is None")
            result = {"source": reservation.source, "status": confirmed.status,
                      "internal_token": reservation.internal_token, "external_ref_id": reservation.external_ref_id}
        elif phase == "fallback":
            earlier = TokenPair(*rest)
            reservation = client.reserve(owner_ref="wheel-card-2")
            check(reservation.source == CLIENT_DIRECT and reservation.reservation_id is None, "client_direct")
            check(client.confirm(reservation).status == "USED", "confirmed locally")
            check(client.detokenize(reservation.external_ref_id) == reservation.pair, "fallback detokenize")
            # A pair TokenPool handed out earlier still resolves, through TOME's NS2.
            check(client.detokenize(earlier.external_ref_id) == earlier, "earlier pair via NS2 detokenize")
            check(client.lookup(earlier.internal_token) == earlier, "earlier pair via NS2 lookup")
            result = {"source": reservation.source, "status": "USED",
                      "internal_token": reservation.internal_token, "external_ref_id": reservation.external_ref_id}
        else:
            raise SystemExit(f"unknown phase {phase}")
    tome.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
