"""Admin for consumers and their service API keys: djangorestframework-api-key's admin (the raw key
is shown once, on creation) plus consumer, scopes, the per-key rate limit and last use; consumers
are listed with their keys, scopes and last use. Key events (create, rotate, revoke) are read-only."""
from __future__ import annotations

from django import forms
from django.contrib import admin
from django.db.models import Max, QuerySet
from django.http import HttpRequest
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey as LibraryAPIKey

from keys.models import ApiKey, ApiScope, Consumer, KeyEvent


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(choices=ApiScope.choices, widget=forms.CheckboxSelectMultiple)
    consumer = forms.ModelChoiceField(queryset=Consumer.objects.all(), required=False,
                                      help_text="Default: a consumer named like the key (created if needed).")

    class Meta:
        model = ApiKey
        fields = ("name", "consumer", "scopes", "rate_limit_per_second", "expiry_date", "revoked")


class ApiKeyColumnsMixin:
    """The key's scopes and last use, as the key list and the consumer's inline show them."""

    @admin.display(description="scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes)

    @admin.display(description="last used")
    def last_used(self, obj: ApiKey) -> object:
        usage = getattr(obj, "usage", None)  # none yet: the reverse accessor raises an AttributeError
        return usage.last_used_at if usage is not None else None


@admin.register(ApiKey)
class ApiKeyAdmin(ApiKeyColumnsMixin, APIKeyModelAdmin):
    form = ApiKeyForm
    list_display = (*APIKeyModelAdmin.list_display, "consumer", "scope_list", "rate_limit_per_second", "last_used")
    list_filter = ("revoked", "created", "consumer")
    list_select_related = ("consumer", "usage")


    def save_model(self, request: HttpRequest, obj: ApiKey, form: forms.ModelForm, change: bool) -> None:
        if obj.consumer_id is None:
            obj.consumer = Consumer.objects.get_or_create(name=obj.name)[0]
        super().save_model(request, obj, form, change)

    def has_delete_permission(self, request, obj=None) -> bool:  # noqa: ANN001
        return False  # reservations and audit records point at keys; revoke instead


class ApiKeyInline(ApiKeyColumnsMixin, admin.TabularInline):
    model = ApiKey
    fields = ("name", "prefix", "scope_list", "revoked", "expiry_date", "last_used")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


    def has_add_permission(self, request, obj=None) -> bool:  # noqa: ANN001
        return False


@admin.register(Consumer)
class ConsumerAdmin(admin.ModelAdmin):
    list_display = ("name", "created_at", "key_list", "last_used")
    search_fields = ("name",)
    inlines = [ApiKeyInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return (super().get_queryset(request).prefetch_related("api_keys")
                .annotate(last_used_at=Max("api_keys__usage__last_used_at")))

    @admin.display(description="keys (scopes)")
    def key_list(self, obj: Consumer) -> str:
        return "; ".join(f"{k.name}{' (revoked)' if k.revoked else ''}: {', '.join(k.scopes)}"
                         for k in obj.api_keys.all())

    @admin.display(description="last used", ordering="last_used_at")
    def last_used(self, obj: Consumer) -> object:
        return obj.last_used_at

    def has_delete_permission(self, request, obj=None) -> bool:  # noqa: ANN001
        return False  # keys point at consumers


@admin.register(KeyEvent)
class KeyEventAdmin(admin.ModelAdmin):
    list_display = ("created_at", "action", "api_key", "actor", "detail")
    list_filter = ("action",)
    list_select_related = ("api_key",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


# The library registers its own concrete APIKey model, which TokenPool does not use: hide it.
if admin.site.is_registered(LibraryAPIKey):
    admin.site.unregister(LibraryAPIKey)
