"""Database triggers that refuse UPDATE and DELETE on the audit log.

The model and its queryset refuse them too; the triggers also stop raw SQL,
bulk paths and anything else that reaches the database.
"""

from django.db import migrations

SQLITE = [
    """CREATE TRIGGER pulls_auditevent_no_update BEFORE UPDATE ON pulls_auditevent
       BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;""",
    """CREATE TRIGGER pulls_auditevent_no_delete BEFORE DELETE ON pulls_auditevent
       BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;""",
]
SQLITE_REVERSE = [
    "DROP TRIGGER IF EXISTS pulls_auditevent_no_update;",
    "DROP TRIGGER IF EXISTS pulls_auditevent_no_delete;",
]
POSTGRES = [
    """CREATE OR REPLACE FUNCTION pulls_auditevent_refuse() RETURNS trigger AS $$
       BEGIN RAISE EXCEPTION 'audit events are append-only'; END; $$ LANGUAGE plpgsql;""",
    """CREATE TRIGGER pulls_auditevent_no_change BEFORE UPDATE OR DELETE ON pulls_auditevent
       FOR EACH ROW EXECUTE FUNCTION pulls_auditevent_refuse();""",
    """CREATE TRIGGER pulls_auditevent_no_truncate BEFORE TRUNCATE ON pulls_auditevent
       FOR EACH STATEMENT EXECUTE FUNCTION pulls_auditevent_refuse();""",
]
POSTGRES_REVERSE = [
    "DROP TRIGGER IF EXISTS pulls_auditevent_no_truncate ON pulls_auditevent;",
    "DROP TRIGGER IF EXISTS pulls_auditevent_no_change ON pulls_auditevent;",
    "DROP FUNCTION IF EXISTS pulls_auditevent_refuse();",
]


def _run(statements_by_vendor):
    def run(apps, schema_editor):
        for sql in statements_by_vendor.get(schema_editor.connection.vendor, []):
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("pulls", "0001_initial")]

    operations = [
        migrations.RunPython(
            _run({"sqlite": SQLITE, "postgresql": POSTGRES}),
            _run({"sqlite": SQLITE_REVERSE, "postgresql": POSTGRES_REVERSE}),
        )
    ]
