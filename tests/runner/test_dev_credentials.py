"""`make run`'s development credentials (issue 10 item 9): kept in files under var/, never printed."""
from __future__ import annotations

import io
import stat

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from keys.models import ApiKey

pytestmark = pytest.mark.django_db
SCOPES = "reserve,lookup,detokenize,pools:read"


def create(path, name="dev-make-run", scopes=SCOPES) -> str:
    out = io.StringIO()
    call_command("create_api_key", name, "--scopes", scopes, "--key-file", str(path), stdout=out)
    return out.getvalue()


def test_key_file_is_created_once_private_and_never_printed(tmp_path):
    path = tmp_path / "var" / "dev-api-key.txt"
    first = create(path)
    raw = path.read_text().strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ApiKey.objects.get_from_key(raw).name == "dev-make-run"
    assert raw not in first and raw.split(".")[1] not in first
    assert first.splitlines()[-1] == str(path)  # the last line names the file, not the key

    second = create(path)
    assert path.read_text().strip() == raw and "kept in" in second and raw not in second
    assert ApiKey.objects.filter(name="dev-make-run", revoked=False).count() == 1


@pytest.mark.parametrize("damage", ["revoked", "garbage", "deleted", "scopes"])
def test_invalid_key_file_is_replaced_and_the_old_key_revoked(tmp_path, damage):
    path = tmp_path / "dev-api-key.txt"
    create(path)
    raw = path.read_text().strip()
    scopes = SCOPES
    if damage == "revoked":
        call_command("revoke_api_key", "dev-make-run", stdout=io.StringIO())
    elif damage == "garbage":
        path.write_text("abcdefgh.0123456789abcdef0123456789abcdef\n")
    elif damage == "deleted":
        path.unlink()
    else:
        scopes = "reserve,lookup"
    create(path, scopes=scopes)
    new = path.read_text().strip()
    assert new != raw
    assert not ApiKey.objects.is_valid(raw)  # the replaced key no longer works
    active = ApiKey.objects.filter(name="dev-make-run", revoked=False)
    assert [k.prefix for k in active] == [new.split(".")[0]]
    assert sorted(active.get().scopes) == sorted(scopes.split(","))


def test_plain_create_api_key_still_prints_the_raw_key_last(tmp_path):
    out = io.StringIO()
    call_command("create_api_key", "billing-x", "--scopes", "lookup", stdout=out)
    assert ApiKey.objects.is_valid(out.getvalue().splitlines()[-1])


def test_admin_password_file_is_generated_private_reused_and_never_printed(tmp_path):
    path = tmp_path / "var" / "admin-password.txt"
    out = io.StringIO()
    call_command("ensure_admin", "--username", "admin", "--password-file", str(path), stdout=out)
    password = path.read_text().strip()
    assert len(password) >= 16 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert password not in out.getvalue() and str(path) in out.getvalue()
    user = get_user_model().objects.get(username="admin")
    assert user.is_superuser and user.check_password(password)

    call_command("ensure_admin", "--username", "admin", "--password-file", str(path), stdout=io.StringIO())
    assert path.read_text().strip() == password

    path.write_text("")
    with pytest.raises(CommandError, match="empty"):
        call_command("ensure_admin", "--username", "admin", "--password-file", str(path), stdout=io.StringIO())


def test_keys_left_by_earlier_make_runs_are_revoked_and_others_kept(tmp_path):
    from devtools.management.commands.make_run_bootstrap import revoke_legacy_dev_keys

    for name in ("dev-1764400000", "dev-1764400100", "dev-team", "billing"):
        ApiKey.objects.create_key(name=name, scopes=["lookup"])
    create(tmp_path / "dev-api-key.txt")
    assert revoke_legacy_dev_keys() == 2
    assert sorted(ApiKey.objects.filter(revoked=False).values_list("name", flat=True)) == [
        "billing", "dev-make-run", "dev-team"]
    assert revoke_legacy_dev_keys() == 0
