"""The forms of a project's de-identification: chosen at creation, changed by
its owners while the project holds no files."""

from __future__ import annotations

from crispy_forms.helper import FormHelper
from crispy_forms.layout import Submit
from django import forms

from pulls.models import Project

DEID_FIELDS = list(Project.DEIDENTIFICATION_FIELDS)


class DeidentificationForm(forms.ModelForm):
    class Meta:
        model = Project
        fields = DEID_FIELDS
        widgets = {"deidentification": forms.RadioSelect}

    def __init__(self, *args, submit: str = "Save", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.helper = FormHelper()
        self.helper.add_input(Submit("submit", submit))


class ProjectForm(DeidentificationForm):
    class Meta(DeidentificationForm.Meta):
        fields = ["name", "slug", "description", *DEID_FIELDS]
        widgets = {
            "deidentification": forms.RadioSelect,
            "description": forms.Textarea(attrs={"rows": 2}),
        }
        help_texts = {"slug": "Its folder's name: lowercase letters, digits and dashes."}

    def clean_slug(self) -> str:
        slug = self.cleaned_data["slug"]
        if slug == "new":
            raise forms.ValidationError("'new' names the page that makes projects: choose another")
        return slug
