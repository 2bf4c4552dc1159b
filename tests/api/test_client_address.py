"""The failed-authentication limit's client address behind the edge proxy (api/auth.py client_address)."""
from __future__ import annotations

from django.test import override_settings

from api.auth import client_address


def test_the_proxys_forwarded_address_wins_over_the_proxy_itself():
    meta = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.9"}
    assert client_address(meta) == "203.0.113.9"


def test_the_last_forwarded_entry_is_the_one_the_proxy_saw():
    """Anything a client put before it is its own claim; the proxy's entry comes last."""
    meta = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "10.9.9.9, 198.51.100.7"}
    assert client_address(meta) == "198.51.100.7"


def test_without_the_header_or_with_it_switched_off_remote_addr_counts():
    assert client_address({"REMOTE_ADDR": "192.0.2.1"}) == "192.0.2.1"
    with override_settings(API_CLIENT_ADDRESS_HEADER=""):
        assert client_address({"REMOTE_ADDR": "192.0.2.1", "HTTP_X_FORWARDED_FOR": "203.0.113.9"}) == "192.0.2.1"
