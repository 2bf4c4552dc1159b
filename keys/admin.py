"""Admin for service API keys: djangorestframework-api-key's admin (the raw key is shown once, on
creation) plus scopes and the per-key rate limit."""
from __future__ import annotations

from django import forms
from django.contrib import admin
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey as LibraryAPIKey

from keys.models import ApiKey, ApiScope


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(choices=ApiScope.choices, widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = ApiKey
        fields = ("name", "scopes", "rate_limit_per_second", "expiry_date", "revoked")


@admin.register(ApiKey)
class ApiKeyAdmin(APIKeyModelAdmin):
    form = ApiKeyForm
    list_display = (*APIKeyModelAdmin.list_display, "scope_list", "rate_limit_per_second")
    list_filter = ("revoked", "created")

    @admin.display(description="scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes)

    def has_delete_permission(self, request, obj=None) -> bool:  # noqa: ANN001
        return False  # reservations and audit records point at keys; revoke instead


# The library registers its own concrete APIKey model, which TokenPool does not use: hide it.
if admin.site.is_registered(LibraryAPIKey):
    admin.site.unregister(LibraryAPIKey)
