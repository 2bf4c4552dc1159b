"""The peer's tables (created by schema.py, found through search_path; Django never migrates them)."""
from django.db import models


class ApiKey(models.Model):
    name = models.CharField(max_length=100)
    key_hash = models.CharField(max_length=64, unique=True)  # sha256 hex of the raw key
    revoked = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        managed = False
        db_table = "api_keys"


class Pair(models.Model):
    pool = models.CharField(max_length=64)
    internal_token = models.CharField(max_length=64, unique=True)
    external_ref_id = models.CharField(max_length=128, unique=True)
    status = models.CharField(max_length=16, default="AVAILABLE")
    reservation_id = models.UUIDField(null=True)
    reserved_by = models.ForeignKey(ApiKey, null=True, on_delete=models.PROTECT)
    reserved_at = models.DateTimeField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        managed = False
        db_table = "pairs"
