"""What TokenPoolClient returns, read from TokenPool's JSON bodies (contract section 2).

Apart from the client so that its fallback (``fallback.py``) can make the same objects without
importing the client.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tokenpool_tome.errors import TokenPoolError
from tokenpool_tome.tome_types import TokenPair

__all__ = ["CLIENT_DIRECT", "Reservation", "pair_from_body"]

#: ``source`` of a reservation or pair made by the client's own TOME fallback (never by the server).
CLIENT_DIRECT = "client_direct"


@dataclass(frozen=True, slots=True)
class Reservation:
    """A reservation body (contract section 2) with parsed datetimes.

    ``source`` is ``pool`` or ``direct`` (made by the server) or ``client_direct`` (made by this
    client's TOME fallback: then ``reservation_id`` and ``expires_at`` are None, because no
    server-side reservation exists). Tokens are left out of ``repr`` so a logged reservation never
    leaks them.
    """

    reservation_id: str | None
    pool: str
    internal_token: str = field(repr=False)
    external_ref_id: str = field(repr=False)
    status: str  # RESERVED | USED | RETIRED
    source: str  # pool | direct | client_direct
    owner_ref: str | None
    reserved_at: datetime
    expires_at: datetime | None
    used_at: datetime | None

    @property
    def pair(self) -> TokenPair:
        return TokenPair(self.internal_token, self.external_ref_id, status=self.status, source=self.source)

    @property
    def is_client_direct(self) -> bool:
        return self.source == CLIENT_DIRECT

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Reservation:
        try:
            return cls(
                reservation_id=str(body["reservation_id"]),
                pool=str(body["pool"]),
                internal_token=str(body["internal_token"]),
                external_ref_id=str(body["external_ref_id"]),
                status=str(body["status"]),
                source=str(body["source"]),
                owner_ref=body.get("owner_ref"),
                reserved_at=_parse_datetime(body["reserved_at"]),
                expires_at=_parse_optional_datetime(body["expires_at"]),
                used_at=_parse_optional_datetime(body.get("used_at")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TokenPoolError(f"malformed reservation in the response ({type(exc).__name__})",
                                 code="malformed_response") from None


def pair_from_body(body: Any) -> TokenPair:
    """A lookup's pair body; ``status`` and ``source`` say where TokenPool found it."""
    try:
        return TokenPair(str(body["internal_token"]), str(body["external_ref_id"]),
                         status=body.get("status"), source=body.get("source"))
    except (KeyError, TypeError) as exc:
        raise TokenPoolError(f"malformed pair in the response ({type(exc).__name__})",
                             code="malformed_response") from None


def _parse_optional_datetime(value: Any) -> datetime | None:
    return None if value is None else _parse_datetime(value)


def _parse_datetime(value: Any) -> datetime:
    if not isinstance(value, str):
        raise TypeError("datetime must be a string")
    # Python 3.11's fromisoformat accepts the trailing "Z" DRF writes.
    return datetime.fromisoformat(value)
