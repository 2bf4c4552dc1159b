"""The admin's consumer adoption page (``/admin/adoption/``): one row per consuming team, and the
planned adoption date a project lead sets (``monitoring.change_consumeradoption``)."""
from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from keys.models import Consumer
from monitoring.adoption import consumer_adoption
from monitoring.services import adoption_plan_set

PLAN_PERMISSION = "monitoring.change_consumeradoption"


class AdoptionPlanForm(forms.Form):
    consumer = forms.ModelChoiceField(queryset=Consumer.objects.all())
    planned_adoption_date = forms.DateField(required=False)


@staff_member_required
def adoption_view(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        return _set_plan(request)
    report = consumer_adoption()
    context = {
        **admin.site.each_context(request),
        "title": "Consumer adoption",
        "report": report,
        "can_plan": request.user.has_perm(PLAN_PERMISSION),
    }
    return TemplateResponse(request, "admin/monitoring/adoption.html", context)


def _set_plan(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm(PLAN_PERMISSION):
        raise PermissionDenied
    form = AdoptionPlanForm(request.POST)
    if form.is_valid():
        consumer = form.cleaned_data["consumer"]
        planned = form.cleaned_data["planned_adoption_date"]
        adoption_plan_set(consumer_id=consumer.pk, planned_adoption_date=planned, user=request.user)
        messages.success(request, f"Planned adoption date of {consumer.name}: {planned or 'cleared'}.")
    else:
        messages.error(request, "Not saved: " + "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items()))
    return HttpResponseRedirect(reverse("monitoring-adoption"))
