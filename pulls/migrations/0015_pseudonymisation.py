"""Pseudonymisation per project (pulls.deid).

Projects that exist already hold files as the PACS sent them: they become
"identifiable" (their de-identification cannot change once files exist), each
gets a key of its own, and their owners are granted "may pull identifiable
data" (which identifiable projects now need), each grant in the audit log.
New projects are pseudonymised unless chosen otherwise.
"""

import django.db.models.deletion
import pulls.models
from django.db import migrations, models


def _existing_projects(apps, schema_editor) -> None:
    Project = apps.get_model("pulls", "Project")
    Membership = apps.get_model("pulls", "Membership")
    User = apps.get_model("accounts", "User")
    AuditEvent = apps.get_model("pulls", "AuditEvent")
    for project in Project.objects.all():
        project.pseudonym_secret = pulls.models.new_pseudonym_secret()
        project.save(update_fields=["pseudonym_secret"])
    owners = Membership.objects.filter(role="owner").select_related("user", "project")
    granted: dict[int, list[str]] = {}
    for membership in owners:
        granted.setdefault(membership.user_id, []).append(membership.project.name)
    for user in User.objects.filter(pk__in=granted, may_pull_identifiable=False):
        user.may_pull_identifiable = True
        user.save(update_fields=["may_pull_identifiable"])
        projects = ", ".join(sorted(granted[user.pk]))
        AuditEvent.objects.create(
            actor_label="upgrade",
            action="permission_changed",
            target=f"{user.username} may pull identifiable data (owner of {projects})"[:300],
            details={"granted": "may_pull_identifiable", "user": user.username,
                     "why": "owner of projects that held identifiable files before the upgrade"},
        )


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0003_may_pull_identifiable'),
        ('pulls', '0014_findresult_descriptions'),
    ]

    operations = [
        migrations.AddField(
            model_name='project',
            name='clean_descriptors',
            field=models.BooleanField(default=True, help_text="Keep study and series descriptions, protocol names and comments, cleaned of the patient's name, IDs and accession number. Off: they are removed."),
        ),
        migrations.AddField(
            model_name='project',
            name='deidentification',
            field=models.CharField(choices=[('pseudonymised', 'Pseudonymised (DICOM PS3.15 Basic Profile)'), ('identifiable', 'Identifiable (files as the PACS holds them)')], default='identifiable', help_text="Pseudonymised: every file is de-identified as it enters the project. Identifiable: files as the PACS holds them (the owner needs an operator's grant).", max_length=16, verbose_name='de-identification'),
        ),
        migrations.AddField(
            model_name='project',
            name='keep_burned_in',
            field=models.BooleanField(default=False, help_text='Off: instances marked BurnedInAnnotation YES, or of kinds that usually show text (secondary captures, ultrasound, scanned documents, PDF) without a NO, go to quarantine. On: they are kept, flagged in the manifest.', verbose_name='keep instances that may show burned-in text'),
        ),
        migrations.AddField(
            model_name='project',
            name='pseudonym_secret',
            field=models.CharField(default=pulls.models.new_pseudonym_secret, editable=False, max_length=64),
        ),
        migrations.AddField(
            model_name='project',
            name='retain_dates',
            field=models.BooleanField(default=True, help_text="Dates move back by a number of weeks of each patient's own: intervals between a patient's studies are kept. Off: dates are emptied.", verbose_name='retain longitudinal temporal information with modified dates'),
        ),
        migrations.AddField(
            model_name='project',
            name='retain_device_identity',
            field=models.BooleanField(default=False, help_text='Keep station names, device serial numbers and device IDs.'),
        ),
        migrations.AddField(
            model_name='project',
            name='retain_institution_identity',
            field=models.BooleanField(default=False, help_text="Keep the institution's name, address and department."),
        ),
        migrations.AddField(
            model_name='project',
            name='retain_patient_characteristics',
            field=models.BooleanField(default=False, help_text='Keep age, sex, size, weight, pregnancy and smoking status.'),
        ),
        migrations.AddField(
            model_name='project',
            name='retain_safe_private',
            field=models.BooleanField(default=False, help_text='Keep the private attributes PS3.15 Table E.3.10-1 lists as safe; every other private attribute is removed in any case.'),
        ),
        migrations.AlterField(
            model_name='project',
            name='deidentification',
            field=models.CharField(choices=[('pseudonymised', 'Pseudonymised (DICOM PS3.15 Basic Profile)'), ('identifiable', 'Identifiable (files as the PACS holds them)')], default='pseudonymised', help_text="Pseudonymised: every file is de-identified as it enters the project. Identifiable: files as the PACS holds them (the owner needs an operator's grant).", max_length=16, verbose_name='de-identification'),
        ),
        migrations.RunPython(_existing_projects, migrations.RunPython.noop),
        migrations.AddField(
            model_name='retrievedinstance',
            name='burned_in',
            field=models.CharField(blank=True, max_length=200),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='action',
            field=models.CharField(choices=[('login', 'Login'), ('login_failed', 'Failed login'), ('logout', 'Logout'), ('echo', 'C-ECHO'), ('find', 'C-FIND'), ('move', 'C-MOVE'), ('get', 'C-GET'), ('job_created', 'Job created'), ('job_cancelled', 'Job cancelled'), ('job_retried', 'Job retried'), ('job_paused', 'Job paused'), ('job_resumed', 'Job resumed'), ('export', 'Export or download'), ('node_changed', 'Node changed'), ('permission_changed', 'Permission changed'), ('job_urgent', 'Job marked urgent'), ('quarantine', 'Instance quarantined'), ('mapping', 'Pseudonym mapping viewed or downloaded'), ('project_changed', 'Project created or changed'), ('deidentify', 'Files pseudonymised on the command line')], max_length=24),
        ),
        migrations.CreateModel(
            name='PseudonymPatient',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('patient_id', models.CharField(max_length=64)),
                ('pseudonym', models.CharField(max_length=64)),
                ('given', models.BooleanField(default=False, help_text="Given by a query file's Pseudonym.")),
                ('date_shift_days', models.IntegerField(default=0)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('project', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='pseudonym_patients', to='pulls.project')),
            ],
            options={
                'ordering': ['project', 'pseudonym'],
                'constraints': [models.UniqueConstraint(fields=('project', 'patient_id'), name='pseudonym_patient'), models.UniqueConstraint(fields=('project', 'pseudonym'), name='pseudonym_unique')],
            },
        ),
        migrations.CreateModel(
            name='PseudonymStudy',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('patient_id', models.CharField(max_length=64)),
                ('study_instance_uid', models.CharField(max_length=64)),
                ('pseudonym_study_uid', models.CharField(max_length=64)),
                ('accession_number', models.CharField(blank=True, max_length=64)),
                ('pseudonym_accession', models.CharField(blank=True, max_length=64)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('project', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='pseudonym_studies', to='pulls.project')),
            ],
            options={
                'ordering': ['project', 'patient_id', 'study_instance_uid'],
                'constraints': [models.UniqueConstraint(fields=('project', 'study_instance_uid'), name='pseudonym_study')],
            },
        ),
    ]
