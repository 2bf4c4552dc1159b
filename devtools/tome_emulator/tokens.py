"""Token shapes minted by the emulator: Luhn-failing numeric16 (NS1) and prefixed base32 (NS2)."""
from __future__ import annotations

import base64
import hmac
import secrets

FORMATS = frozenset({"numeric16", "prefixed"})
DEFAULT_PREFIX = "ext_"
PREFIXED_RANDOM_CHARS = 26

# Luhn doubles every second digit from the right; _DOUBLED[d] is that digit's contribution.
_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def luhn_valid(number: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = ord(char) - 48
        total += _DOUBLED[digit] if position % 2 else digit
    return total % 10 == 0


_NUMERIC_SPACE = 9 * 10**14  # 15-digit payloads with a non-zero first digit


def numeric16_tokens(count: int) -> list[str]:
    """16 digits that fail Luhn, so no token can ever be mistaken for a card number.

    15 random digits (first one non-zero) and a last digit drawn from the nine that break the
    checksum: ~53 bits of randomness each. One bulk draw from ``secrets`` keeps 5,000 at ~20 ms.
    """
    raw = secrets.token_bytes(8 * count)
    minted = []
    for offset in range(0, 8 * count, 8):
        draw = int.from_bytes(raw[offset:offset + 8], "big")
        payload = str(10**14 + draw % _NUMERIC_SPACE)
        # Luhn from the right: the payload's last digit sits next to the check digit, so it is doubled.
        total = sum(map(int, payload[-2::-2])) + sum([_DOUBLED[int(c)] for c in payload[-1::-2]])
        passing = (10 - total % 10) % 10
        minted.append(payload + str((passing + 1 + (draw // _NUMERIC_SPACE) % 9) % 10))
    return minted


def prefixed_tokens(prefix: str, count: int) -> list[str]:
    # 20 random bytes → 32 base32 chars per token; the first 26 carry 130 uniformly random bits.
    encoded = base64.b32encode(secrets.token_bytes(20 * count)).decode("ascii").lower()
    return [prefix + encoded[i:i + PREFIXED_RANDOM_CHARS] for i in range(0, 32 * count, 32)]


def new_tokens(*, token_format: str, prefix: str, count: int) -> list[str]:
    if token_format == "numeric16":
        return numeric16_tokens(count)
    return prefixed_tokens(prefix, count)


def surrogate_values(count: int) -> list[str]:
    """Opaque values (``gen_<32 hex>``) generated tokens are bound to until their owner tokenizes data."""
    encoded = secrets.token_bytes(16 * count).hex()
    return ["gen_" + encoded[i:i + 32] for i in range(0, 32 * count, 32)]


def value_digest(master_key: bytes, value: str) -> bytes:
    """Keyed digest that makes tokenization convergent without indexing the value itself."""
    return hmac.digest(master_key, value.encode("utf-8"), "sha256")


def new_master_key() -> bytes:
    return secrets.token_bytes(32)
