from django.db import migrations

OPERATORS = "operators"


def create(apps, schema_editor):
    apps.get_model("auth", "Group").objects.get_or_create(name=OPERATORS)


def remove(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=OPERATORS).delete()


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_initial"), ("auth", "0012_alter_user_first_name_max_length")]

    operations = [migrations.RunPython(create, remove)]
