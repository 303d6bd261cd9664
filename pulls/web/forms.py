from crispy_forms.helper import FormHelper
from crispy_forms.layout import Submit
from django import forms
from django.conf import settings

from pulls import selectors
from pulls.delivery.sending import destinations_for
from pulls.dicom.identifiers import LEVELS
from pulls.queries.files import ParsedQueries, human_size, parse_query_file
from pulls.queries.pasted import PASTE_KEYS, parse_pasted
from pulls.queries.retrievals import retrieval_problems

# How many problems the form lists before "and N more".
_SHOWN_PROBLEMS = 50


KIND_CHOICES = [
    ("find", "Find (C-FIND): see what matches first"),
    ("move", "Retrieve with C-MOVE: rows name StudyInstanceUID (and SeriesInstanceUID)"),
    ("get", "Retrieve with C-GET: rows name StudyInstanceUID (and SeriesInstanceUID)"),
]


class FindJobForm(forms.Form):
    kind = forms.ChoiceField(choices=KIND_CHOICES, initial="find", label="What to do")
    project = forms.ModelChoiceField(queryset=None, empty_label=None)
    node = forms.ModelChoiceField(queryset=None, empty_label=None, label="PACS node")
    query_file = forms.FileField(
        required=False,
        help_text="JSON list of {keyword: value} objects, or CSV / XLSX with DICOM keywords "
        "as column headers (PatientID, StudyDate, AccessionNumber, ...). Empty or * values "
        "are returned by the PACS.",
    )
    pasted = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 5}),
        label="…or paste a list, one value per line",
        help_text="Each line is a row (row numbers are line numbers).",
    )
    pasted_key = forms.ChoiceField(
        choices=list(PASTE_KEYS.items()),
        initial="AccessionNumber",
        required=False,
        label="The lines are",
    )
    date_from = forms.DateField(
        required=False, widget=forms.DateInput(attrs={"type": "date"}), label="Studies from"
    )
    date_to = forms.DateField(
        required=False, widget=forms.DateInput(attrs={"type": "date"}), label="Studies to"
    )
    modality = forms.CharField(
        required=False, max_length=16, help_text="For every line of a pasted list, e.g. CT."
    )
    follows = forms.UUIDField(required=False, widget=forms.HiddenInput)
    default_level = forms.ChoiceField(
        choices=[("", "— only from the file —")] + [(lvl, lvl) for lvl in LEVELS],
        required=False,
        initial="STUDY",
        label="QueryRetrieveLevel for rows without one",
    )
    title = forms.CharField(max_length=200, required=False)
    destination = forms.ModelChoiceField(
        queryset=None,
        required=False,
        empty_label="none: keep the files in the project",
        label="Send the files to",
        help_text="Retrievals: when the job ends, its files go to this node by C-STORE.",
    )

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["project"].queryset = selectors.writable_projects_for(user=user)
        self.fields["node"].queryset = selectors.node_list_for_user(user=user).filter(
            is_active=True
        )
        self.fields["destination"].queryset = destinations_for(user)
        if not self.fields["destination"].queryset.exists():
            del self.fields["destination"]
        self.parsed: ParsedQueries | None = None
        self.source_name = ""
        self.followed = None  # the job whose failed rows this file corrects
        self._user = user
        self.helper = FormHelper()
        self.helper.add_input(Submit("submit", "Check the file and preview"))

    def clean_follows(self):
        code = self.cleaned_data.get("follows")
        if code is None:
            return None
        job = selectors.job_list_for_user(user=self._user).filter(code=code).first()
        if job is None:
            raise forms.ValidationError("That job is not one you may see.")
        self.followed = job
        return code

    def _read(self, cleaned) -> tuple[ParsedQueries, str] | None:
        """The rows of the uploaded file or of the pasted list, and its name."""
        upload, pasted = cleaned.get("query_file"), (cleaned.get("pasted") or "").strip()
        node = cleaned.get("node")
        charset = {"character_set": node.character_set} if node is not None else {}
        if upload is not None and pasted:
            raise forms.ValidationError("Upload a query file or paste a list, not both.")
        if upload is None and not pasted:
            raise forms.ValidationError("Upload a query file, or paste a list of values.")
        if pasted:
            parsed = parse_pasted(
                pasted,
                key=cleaned.get("pasted_key") or "AccessionNumber",
                level=cleaned.get("default_level") or "STUDY",
                date_from=cleaned.get("date_from"),
                date_to=cleaned.get("date_to"),
                modality=cleaned.get("modality") or "",
                max_rows=settings.PACSNPULL_QUERY_MAX_ROWS,
                **charset,
            )
            return parsed, "pasted list"
        limit = settings.PACSNPULL_QUERY_MAX_BYTES
        if upload.size > limit:
            raise forms.ValidationError(
                f"The file is {human_size(upload.size)}; the limit is {human_size(limit)}: "
                "split it into several files."
            )
        parsed = parse_query_file(
            upload.read(),
            name=upload.name,
            default_level=cleaned.get("default_level", ""),
            max_rows=settings.PACSNPULL_QUERY_MAX_ROWS,
            max_bytes=limit,
            **charset,
        )
        return parsed, upload.name

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        parsed, name = self._read(cleaned)
        if not parsed.ok:
            shown = [str(p) for p in parsed.problems[:_SHOWN_PROBLEMS]]
            more = len(parsed.problems) - len(shown)
            if more or parsed.truncated:
                shown.append("… and more problems: fix these first, then upload again.")
            raise forms.ValidationError(
                [f"{name}: nothing was saved. Fix these and upload again:", *shown]
            )
        if cleaned.get("kind") in ("move", "get"):
            node = cleaned.get("node")
            problems = retrieval_problems(
                parsed.rows,
                parsed.numbers,
                patient_root=node is not None and node.query_model == "P",
            )
            if problems:
                shown = [str(p) for p in problems[:_SHOWN_PROBLEMS]]
                raise forms.ValidationError(
                    [f"{name}: nothing was saved. Fix these and upload again:", *shown]
                )
        self.parsed, self.source_name = parsed, name
        return cleaned
