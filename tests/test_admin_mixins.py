"""The shared read-only admin: every admin built on it lets a superuser view and nothing else."""
from __future__ import annotations

import pytest
from django.contrib import admin
from django.test import RequestFactory

from common.admin_mixins import ReadOnlyAdminMixin
from monitoring.models import PoolConfigChange, PoolSnapshot
from onboarding.models import ApprovalDecision, OnboardingSummary, OnboardingTransition
from pool.models import AuditRecord, TokenPair, TokenReveal
from refill.models import RefillLease, RefillRun

pytestmark = pytest.mark.django_db

READ_ONLY_MODELS = [TokenPair, AuditRecord, TokenReveal, RefillRun, RefillLease, PoolSnapshot, PoolConfigChange,
                    ApprovalDecision, OnboardingTransition, OnboardingSummary]


def test_read_only_admins_deny_add_change_delete_but_allow_view(django_user_model):
    request = RequestFactory().get("/admin/")
    request.user = django_user_model.objects.create_superuser("ro-admin", "ro@example.com", "pw-unused")
    read_only = {model for model, model_admin in admin.site._registry.items()
                 if isinstance(model_admin, ReadOnlyAdminMixin)}
    assert read_only == set(READ_ONLY_MODELS)
    for model in READ_ONLY_MODELS:
        model_admin = admin.site._registry[model]
        assert model_admin.has_view_permission(request), model
        assert not model_admin.has_add_permission(request), model
        assert not model_admin.has_change_permission(request), model
        # RefillLease keeps a deliberate exception: deleting a stuck lease is the operator's way out.
        assert model_admin.has_delete_permission(request) is (model is RefillLease), model


def test_read_only_inlines_deny_add_change_delete():
    from onboarding.admin import DecisionInline, TransitionInline

    request = RequestFactory().get("/admin/")
    for inline in (DecisionInline, TransitionInline):
        instance = inline(inline.model, admin.site)
        assert isinstance(instance, ReadOnlyAdminMixin)
        assert not instance.has_add_permission(request, obj=None)
        assert not instance.has_change_permission(request)
        assert not instance.has_delete_permission(request)
