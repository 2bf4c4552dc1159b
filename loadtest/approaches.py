"""The two ways a consuming team creates and detokenizes a card, as the load test drives them.

- ``pool``: ``TokenPoolClient.reserve()`` + ``confirm()`` (a prefetched pair), then
  ``TokenPoolClient.detokenize(external_ref_id)``, answered from TokenPool's database.
- ``buffered``: the pool approach through ``TokenPoolClient(buffer=True)``: ``reserve()`` from the
  client's leased local buffer and ``confirm(wait=False)`` (issue 22); detokenize as ``pool``.
- ``library``: ``HttpTokenizationLibrary.tokenize(card_number)`` (NS1 tokenize + NS2 tokenize, live),
  then ``internal_for(external_ref_id)`` (one NS2 detokenize): the same answer the pool's detokenize
  gives (the internal token of an external reference id).
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Protocol

from tokenpool_tome import TokenPoolClient  # the contract's section 5 client
from tokenpool_tome.client import HttpTokenizationLibrary, TomeClientConfig


@dataclass(frozen=True, slots=True)
class Created:
    internal_token: str
    external_ref_id: str
    source: str  # pool | direct | client_direct | tome


class Approach(Protocol):
    name: str

    def create(self) -> Created: ...
    def detokenize(self, external_ref_id: str) -> str | None: ...
    def close(self) -> None: ...


class PoolApproach:
    name = "pool"

    def __init__(self, *, base_url: str, api_key: str, pool: str, timeout: float) -> None:
        # No tome=: a TokenPool failure must show up as an error here, not as a silent live call.
        self._client = TokenPoolClient(base_url, api_key, pool=pool, timeout=timeout)

    def create(self) -> Created:
        reservation = self._client.reserve()
        self._client.confirm(reservation.reservation_id)
        return Created(reservation.internal_token, reservation.external_ref_id, reservation.source)

    def detokenize(self, external_ref_id: str) -> str | None:
        pair = self._client.detokenize(external_ref_id)
        return None if pair is None else pair.internal_token

    def close(self) -> None:
        close = getattr(self._client, "close", None)
        if close is not None:
            close()


class BufferedPoolApproach(PoolApproach):
    name = "buffered"

    def __init__(self, *, base_url: str, api_key: str, pool: str, timeout: float) -> None:
        self._client = TokenPoolClient(base_url, api_key, pool=pool, timeout=timeout, buffer=True)

    def create(self) -> Created:
        reservation = self._client.reserve()
        self._client.confirm(reservation, wait=False)
        return Created(reservation.internal_token, reservation.external_ref_id, reservation.source)


class LibraryApproach:
    name = "library"

    def __init__(self, *, base_url: str, api_token: str, ns1: str, ns2: str, timeout: float) -> None:
        self._library = HttpTokenizationLibrary(TomeClientConfig(
            base_url=base_url, api_token=api_token, ns1=ns1, ns2=ns2, read_timeout=timeout))

    def create(self) -> Created:
        # A fresh test card number per card (never printed); 10^15 of them, so a repeat that
        # TOME would map to the same tokens (and we would count as a duplicate) is negligible.
        pair = self._library.tokenize(f"9{secrets.randbelow(10**15):015d}")
        return Created(pair.internal_token, pair.external_ref_id, "tome")

    def detokenize(self, external_ref_id: str) -> str | None:
        return self._library.internal_for(external_ref_id)

    def close(self) -> None:
        self._library.close()


_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def error_code(exc: BaseException) -> str:
    """The contract's ``code`` when the error carries one, else the exception's name in snake_case."""
    code = getattr(exc, "code", None)
    if isinstance(code, str) and code:
        return code
    return _CAMEL.sub("_", type(exc).__name__).lower()
