"""The descriptions of a match in columns of their own, for the description
filter (the matches already stored get theirs from their attributes), and
the indexes the job page's default order and that filter read."""

from django.db import migrations, models


def _fill(apps, schema_editor) -> None:
    FindResult = apps.get_model("pulls", "FindResult")
    last = 0
    while True:  # in slices by key: nothing is written to a table being read
        batch = list(FindResult.objects.filter(pk__gt=last).order_by("pk")[:2000])
        if not batch:
            return
        last = batch[-1].pk
        for match in batch:
            attributes = match.attributes if isinstance(match.attributes, dict) else {}
            match.study_description = str(attributes.get("StudyDescription") or "")[:256]
            match.series_description = str(attributes.get("SeriesDescription") or "")[:256]
        FindResult.objects.bulk_update(batch, ["study_description", "series_description"])


class Migration(migrations.Migration):
    dependencies = [
        ("pulls", "0013_job_is_search"),
    ]

    operations = [
        migrations.AddField(
            model_name="findresult",
            name="series_description",
            field=models.CharField(blank=True, max_length=256),
        ),
        migrations.AddField(
            model_name="findresult",
            name="study_description",
            field=models.CharField(blank=True, max_length=256),
        ),
        migrations.RunPython(_fill, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name="findresult",
            index=models.Index(fields=["job", "item"], name="findresult_row"),
        ),
        migrations.AddIndex(
            model_name="findresult",
            index=models.Index(
                fields=["job", "study_description", "series_description"],
                name="findresult_description",
            ),
        ),
    ]
