from django import forms
from django.contrib import admin

from pulls.dicomweb.credentials import secret_seal
from pulls.models import AuditEvent, FindResult, Job, JobItem, Membership, PacsNode, Project


class PacsNodeForm(forms.ModelForm):
    """The node's settings, with its DICOMweb password or token typed in and
    sealed (never shown again: left blank, the stored one stays)."""

    new_secret = forms.CharField(
        label="Password or token",
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted and never shown again; leave blank to keep the stored one. "
        "Or name an environment variable below.",
    )
    forget_secret = forms.BooleanField(label="Forget the stored password or token", required=False)

    class Meta:
        model = PacsNode
        fields = "__all__"  # noqa: DJ007  (the admin's fieldsets choose what is shown)

    def save(self, commit: bool = True) -> PacsNode:
        node = super().save(commit=False)
        if self.cleaned_data.get("forget_secret"):
            node.web_secret = ""
        if self.cleaned_data.get("new_secret"):
            node.web_secret = secret_seal(self.cleaned_data["new_secret"])
        if commit:
            node.save()
            self.save_m2m()
        return node


@admin.register(PacsNode)
class PacsNodeAdmin(admin.ModelAdmin):
    form = PacsNodeForm
    list_display = (
        "name",
        "protocol",
        "ae_title",
        "host",
        "port",
        "query_model",
        "retrieve_method",
        "max_associations",
        "queries_per_minute",
        "retrievals_per_hour",
        "allowed_windows",
        "suspended",
        "is_destination",
        "last_echo_ok",
    )
    list_filter = (
        "protocol", "query_model", "retrieve_method", "suspended", "is_active", "is_destination",
    )  # fmt: skip
    search_fields = ("name", "ae_title", "host", "base_url")
    filter_horizontal = ("granted_users", "granted_groups")
    readonly_fields = ("code", "last_echo_at", "last_echo_ok", "last_echo_message")
    fieldsets = (
        (
            None,
            {"fields": ("name", "code", "protocol", "is_active", "suspended", "is_destination")},
        ),
        (
            "DIMSE connection",
            {
                "fields": (
                    "ae_title",
                    "host",
                    "port",
                    "calling_ae_title",
                    "move_destination",
                    "query_model",
                    "retrieve_method",
                    "character_set",
                    "return_keys_omitted",
                )
            },
        ),
        (
            "DICOMweb connection",
            {
                "fields": (
                    "base_url",
                    "qido_prefix",
                    "wado_prefix",
                    "stow_prefix",
                    "web_auth",
                    "web_username",
                    "new_secret",
                    "forget_secret",
                    "web_secret_env",
                    "web_ca_bundle",
                )
            },
        ),
        (
            "Timeouts (seconds)",
            {"fields": ("connect_timeout", "acse_timeout", "dimse_timeout", "network_timeout")},
        ),
        (
            "Limits",
            {
                "fields": (
                    "max_associations",
                    "queries_per_minute",
                    "retrievals_per_hour",
                    "allowed_windows",
                    "stall_limit",
                    "result_cap",
                )
            },
        ),
        ("Access", {"fields": ("granted_users", "granted_groups")}),
        ("Health", {"fields": ("last_echo_at", "last_echo_ok", "last_echo_message")}),
    )


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ("user",)


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "created_at")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("project", "user", "role", "created_at")
    list_filter = ("role", "project")
    search_fields = ("project__name", "user__username")


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = (
        "code",
        "kind",
        "status",
        "project",
        "node",
        "owner",
        "items_total",
        "items_done",
        "items_failed",
        "created_at",
    )
    list_filter = ("kind", "status", "node", "project")
    search_fields = ("code", "title", "owner__username", "project__name")
    readonly_fields = [f.name for f in Job._meta.fields]
    list_select_related = ("project", "node", "owner")


@admin.register(JobItem)
class JobItemAdmin(admin.ModelAdmin):
    list_display = ("job", "row", "status", "attempts", "matches", "error_code", "finished_at")
    list_filter = ("status",)
    search_fields = ("job__code",)
    readonly_fields = [f.name for f in JobItem._meta.fields]
    list_select_related = ("job",)


@admin.register(FindResult)
class FindResultAdmin(admin.ModelAdmin):
    list_display = ("job", "patient_id", "study_date", "modality", "accession_number")
    list_filter = ("modality",)
    search_fields = ("job__code", "patient_id", "accession_number", "study_instance_uid")
    readonly_fields = [f.name for f in FindResult._meta.fields]
    list_select_related = ("job",)


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: operators look, nobody adds, changes or deletes."""

    list_display = ("at", "actor_label", "ip", "action", "success", "node", "project", "target")
    list_filter = ("action", "success", "node", "project")
    search_fields = ("actor_label", "target", "message")
    date_hierarchy = "at"
    list_select_related = ("node", "project")

    def get_actions(self, request):
        return {}

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
