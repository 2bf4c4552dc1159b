"""Admin of the onboarding room: the task list with start/submit/approve/reject actions, read-only
audit trail, and the per-environment readiness summary page.

Every state change goes through ``onboarding.services``; refused actions become admin
messages (never a 500). Tasks come from plan.json, so the admin neither adds nor deletes them and
only the owner is edited by hand.
"""
from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from common.admin_mixins import ReadOnlyAdminMixin
from common.errors import TokenPoolError
from onboarding.models import (
    APPROVE_PERMISSION,
    ApprovalDecision,
    OnboardingGroup,
    OnboardingState,
    OnboardingSummary,
    OnboardingTask,
    OnboardingTransition,
)
from onboarding.projection import Projection, go_live_projection, pool_readiness
from onboarding.projection_export import projection_csv, projection_gantt, projection_ical
from onboarding.selectors import environment_summary, four_eyes_conflicts
from onboarding.services import task_approve, task_reject, task_start, task_submit
from pool.models import Environment

SUMMARY_URL_NAME = "onboarding_onboardingtask_summary"
EXPORT_URL_NAME = "onboarding_onboardingtask_projection_export"
# The original plan lists the tasks but leaves every estimate empty: the figures loaded from plan.json
# are examples, and every page showing them must say so.
ESTIMATE_LABEL = "est. days (illustrative)"
ESTIMATES_NOTE = ("Estimates are illustrative: the original plan leaves them empty; the figures here are "
                  "examples to replace with your team's own.")


class _ReadOnlyInline(ReadOnlyAdminMixin, admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False


class TransitionInline(_ReadOnlyInline):
    model = OnboardingTransition
    fields = readonly_fields = ("at", "from_state", "to_state", "by", "note")
    verbose_name_plural = "transitions (append-only)"


class DecisionInline(_ReadOnlyInline):
    model = ApprovalDecision
    fields = readonly_fields = ("decided_at", "decision", "decided_by", "note")
    verbose_name_plural = "approval decisions (append-only)"


class DecisionNoteForm(forms.Form):
    note = forms.CharField(widget=forms.Textarea(attrs={"rows": 4, "cols": 60}), required=False,
                           max_length=4000)

    def __init__(self, *args, note_required: bool, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["note"].required = note_required
        self.fields["note"].label = "Note (required: say why)" if note_required else "Note (optional)"


@admin.register(OnboardingTask)
class OnboardingTaskAdmin(admin.ModelAdmin):
    change_list_template = "admin/onboarding/onboardingtask_change_list.html"
    # Short, combined columns so the whole row (both people of the four-eyes pair included) fits a
    # 1400 px window beside the navigation and filter sidebars.
    # ("optional" stays a filter: the plan already writes it into the title of the optional task.)
    list_display = ("title", "environment", "group_short", "state_label", "owner", "estimate", "four_eyes")
    list_filter = ("environment", "group", "state", "optional")
    list_select_related = ("owner", "submitted_by", "approved_by")
    search_fields = ("title", "slug", "description")
    ordering = ("position", "id")
    list_per_page = 100
    actions = ["start_tasks", "submit_tasks", "approve_tasks", "reject_tasks"]
    fields = ("title", "slug", "environment", "group", "optional", "estimate", "description",
              "prerequisite_list", "owner", "state", "submitted_by", "submitted_at", "approved_by",
              "approved_at", "created_at", "updated_at")
    readonly_fields = tuple(f for f in fields if f != "owner")
    inlines = [TransitionInline, DecisionInline]

    # --- permissions: the plan owns the rows -------------------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_approve_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(APPROVE_PERMISSION)

    # --- columns ---------------------------------------------------------------------------

    @admin.display(description="state", ordering="state")
    def state_label(self, obj: OnboardingTask) -> str:
        days = obj.days_waiting_for_approval()
        label = OnboardingState(obj.state).label
        return label if days is None else f"{label} ({days:.1f} days)"

    @admin.display(description="group", ordering="group")
    def group_short(self, obj: OnboardingTask) -> str:
        # "Approach 2: prefetch — batch job" → "prefetch — batch job"; "Common (required …)" → "Common"
        label = OnboardingGroup(obj.group).label
        return label.split(": ", 1)[-1].split(" (", 1)[0]

    @admin.display(description=ESTIMATE_LABEL, ordering="estimate_days")
    def estimate(self, obj: OnboardingTask) -> str:
        return "—" if obj.estimate_days is None else f"{obj.estimate_days:g}"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # Who rejected a task lives only in its decisions (approve also sets approved_by).
        last_decider = (ApprovalDecision.objects.filter(task=OuterRef("pk")).order_by("-decided_at", "-id")
                        .values("decided_by__username")[:1])
        return super().get_queryset(request).annotate(last_decider=Subquery(last_decider))

    @admin.display(description="submitted → decided by")
    def four_eyes(self, obj: OnboardingTask) -> str:
        if not obj.submitted_by_id:
            return "—"
        if obj.state == OnboardingState.APPROVED:
            decider = obj.approved_by
        elif obj.state == OnboardingState.REJECTED:
            decider = getattr(obj, "last_decider", None)
        else:
            decider = None
        return f"{obj.submitted_by} → {decider or '…'}"

    @admin.display(description="prerequisites")
    def prerequisite_list(self, obj: OnboardingTask) -> str:
        items = [f"{p.title} ({OnboardingState(p.state).label})" for p in obj.prerequisites.order_by("position")]
        return "; ".join(items) or "—"

    def get_list_display(self, request: HttpRequest):
        # One projection per page view, closed over by the column (no state shared between requests).
        projection = go_live_projection()

        @admin.display(description="projected (likely / late)")
        def projected(obj: OnboardingTask) -> str:
            return _projected_cell(projection, obj)

        display = list(super().get_list_display(request))
        display.insert(display.index("estimate") + 1, projected)
        return display

    def changelist_view(self, request: HttpRequest, extra_context=None):
        extra_context = {**(extra_context or {}), "summary_links": _summary_links(),
                         "estimates_note": ESTIMATES_NOTE}
        return super().changelist_view(request, extra_context=extra_context)

    # --- actions ---------------------------------------------------------------------------

    def _apply(self, request: HttpRequest, queryset: QuerySet, *, verb: str, service, **kwargs) -> None:
        done, failed = [], 0
        # Plan order, so a prerequisite selected together with its dependent is handled first.
        for task in queryset.order_by("position", "id"):
            try:
                service(task=task, user=request.user, **kwargs)
            except TokenPoolError as exc:
                failed += 1
                self.message_user(request, exc.detail, messages.ERROR)
            else:
                done.append(task.title)
        if done:
            self.message_user(request, f"{verb} {len(done)} task(s): {', '.join(done)}.", messages.SUCCESS)
        elif not failed:
            self.message_user(request, "No task was changed.", messages.WARNING)

    @admin.action(description="Start selected tasks", permissions=["change"])
    def start_tasks(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._apply(request, queryset, verb="Started", service=task_start)

    @admin.action(description="Submit selected tasks for approval", permissions=["change"])
    def submit_tasks(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._apply(request, queryset, verb="Submitted", service=task_submit)

    @admin.action(description="Approve selected tasks…", permissions=["approve"])
    def approve_tasks(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._decide(request, queryset, action="approve_tasks", verb="Approve", done="Approved",
                            service=task_approve, note_required=False)

    @admin.action(description="Reject selected tasks…", permissions=["approve"])
    def reject_tasks(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._decide(request, queryset, action="reject_tasks", verb="Reject", done="Rejected",
                            service=task_reject, note_required=True)

    def _decide(self, request: HttpRequest, queryset: QuerySet, *, action: str, verb: str, done: str, service,
                note_required: bool) -> HttpResponse | None:
        """Admin intermediate page: first POST shows the note form, the confirming POST decides.
        Tasks the user may not decide (four-eyes) are refused here, before the form."""
        conflicts = four_eyes_conflicts(tasks=list(queryset), user=request.user)
        for task in conflicts:
            self.message_user(request, f"Cannot {verb.lower()} “{task.title}”: you started, submitted or changed it; "
                              "another approver must decide (four-eyes).", messages.ERROR)
        queryset = queryset.exclude(pk__in=[t.pk for t in conflicts])
        if conflicts and not queryset.exists():
            return None
        if request.POST.get("confirm") == "yes":
            form = DecisionNoteForm(request.POST, note_required=note_required)
            if form.is_valid():
                self._apply(request, queryset, verb=done, service=service, note=form.cleaned_data["note"])
                return None  # back to the change list, messages shown there
        else:
            form = DecisionNoteForm(note_required=note_required)
        tasks = list(queryset.select_related("submitted_by").order_by("position", "id"))
        context = {
            **self.admin_site.each_context(request),
            "title": f"{verb} {len(tasks)} onboarding task(s)",
            "opts": self.opts,
            "tasks": tasks,
            "form": form,
            "action": action,
            "verb": verb,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/onboarding/decision_note.html", context)

    # --- summary page ----------------------------------------------------------------------

    def get_urls(self):
        view = self.admin_site.admin_view(self.summary_view)
        return [
            path("summary/projection.<str:fmt>", self.admin_site.admin_view(self.projection_export_view),
                 name=EXPORT_URL_NAME),
            path("summary/", view, name=SUMMARY_URL_NAME),
            path("summary/<str:environment>/", view, name=SUMMARY_URL_NAME),
            *super().get_urls(),
        ]

    def summary_view(self, request: HttpRequest, environment: str = Environment.UAT) -> HttpResponse:
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        try:
            env = Environment(environment.upper())
        except ValueError:
            return HttpResponseRedirect(reverse(f"admin:{SUMMARY_URL_NAME}"))
        summary = environment_summary(environment=env)
        projection = go_live_projection()
        context = {
            **self.admin_site.each_context(request),
            "title": f"Onboarding readiness — {env.label}",
            "opts": self.opts,
            "summary": summary,
            "projection": projection,
            "env_projection": projection.environments[env.value],
            "pool_readiness": pool_readiness(projection=projection.environments[env.value]),
            "gantt": projection_gantt(projection=projection),
            "export_csv_url": reverse(f"admin:{EXPORT_URL_NAME}", args=["csv"]),
            "export_ics_url": reverse(f"admin:{EXPORT_URL_NAME}", args=["ics"]),
            "summary_links": _summary_links(current=env),
            "estimates_note": ESTIMATES_NOTE,
            "changelist_url": reverse("admin:onboarding_onboardingtask_changelist"),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/onboarding/summary.html", context)


    def projection_export_view(self, request: HttpRequest, fmt: str) -> HttpResponse:
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        projection = go_live_projection()
        if fmt == "csv":
            response = HttpResponse(projection_csv(projection=projection), content_type="text/csv; charset=utf-8")
        elif fmt == "ics":
            response = HttpResponse(projection_ical(projection=projection, now=timezone.now()),
                                    content_type="text/calendar; charset=utf-8")
        else:
            return HttpResponseRedirect(reverse(f"admin:{SUMMARY_URL_NAME}"))
        response["Content-Disposition"] = f'attachment; filename="tokenpool-go-live-projection.{fmt}"'
        return response


def _projected_cell(projection: Projection, obj: OnboardingTask) -> str:
    tp = projection.tasks.get(obj.pk)
    if tp is None:
        return "—"
    text = f"{tp.likely_end:%Y-%m-%d} / {tp.late_end:%Y-%m-%d}"
    if obj.state == OnboardingState.APPROVED:
        return f"approved {tp.likely_end:%Y-%m-%d}"
    return text + (" (late)" if tp.late_reason else "")


def _summary_links(*, current: str | None = None) -> list[dict]:
    return [
        {"label": env.label, "url": reverse(f"admin:{SUMMARY_URL_NAME}", args=[env.value]),
         "current": env == current}
        for env in Environment
    ]


@admin.register(OnboardingSummary)
class OnboardingSummaryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Admin-index entry for the summary page: its "list" is the summary itself."""

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        return request.user.has_perm("onboarding.view_onboardingtask") or request.user.has_perm(
            "onboarding.change_onboardingtask")

    def changelist_view(self, request: HttpRequest, extra_context=None) -> HttpResponse:
        return HttpResponseRedirect(reverse(f"admin:{SUMMARY_URL_NAME}"))


@admin.register(ApprovalDecision)
class ApprovalDecisionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Append-only: viewable, never added, changed or deleted through the admin."""

    list_display = ("decided_at", "task", "decision", "decided_by", "note_short")
    list_filter = ("decision", "task__environment", "task__group")
    list_select_related = ("task", "decided_by")
    search_fields = ("task__title", "note", "decided_by__username")
    date_hierarchy = "decided_at"
    readonly_fields = ("task", "decision", "decided_by", "decided_at", "note")
    actions = None

    @admin.display(description="note")
    def note_short(self, obj: ApprovalDecision) -> str:
        return obj.note if len(obj.note) <= 80 else obj.note[:77] + "…"



@admin.register(OnboardingTransition)
class OnboardingTransitionAdmin(ApprovalDecisionAdmin):
    list_display = ("at", "task", "from_state", "to_state", "by", "note_short")
    list_filter = ("to_state", "task__environment", "task__group")
    list_select_related = ("task", "by")
    search_fields = ("task__title", "note", "by__username")
    date_hierarchy = "at"
    readonly_fields = ("task", "from_state", "to_state", "by", "at", "note")
