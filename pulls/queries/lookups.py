"""``ilike``: a case-insensitive SQL LIKE on a text column or a JSON key's text.

The description filter's patterns go to the database as LIKE patterns, not as
regular expressions: SQLite's REGEXP is Python's backtracking ``re`` in the
request's process, where a pattern of a few ``*`` (``.*``) can take seconds
per row; LIKE in SQLite and PostgreSQL gives up on a failed ``%`` at once.
"""

from __future__ import annotations

from django.db.models import CharField, Lookup
from django.db.models.fields.json import KeyTransform, KeyTransformTextLookupMixin


@CharField.register_lookup
class ILike(Lookup):
    lookup_name = "ilike"
    prepare_rhs = False

    def as_sql(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = self.process_rhs(compiler, connection)
        # SQLite's LIKE ignores the case of ASCII letters, as Django's icontains.
        operator = "ILIKE" if connection.vendor == "postgresql" else "LIKE"
        return f"{lhs} {operator} {rhs} ESCAPE '\\'", [*lhs_params, *rhs_params]


@KeyTransform.register_lookup
class KeyTransformILike(KeyTransformTextLookupMixin, ILike):
    pass


def like_pattern(pattern: str) -> str:
    """A DICOM-style pattern (``*`` any run of characters, ``?`` one) as a LIKE
    pattern; LIKE's own ``%``, ``_`` and the escape character stand for themselves."""
    out = []
    for c in pattern:
        if c == "*":
            if not out or out[-1] != "%":  # a run of * is one
                out.append("%")
        elif c == "?":
            out.append("_")
        elif c in "%_\\":
            out.append("\\" + c)
        else:
            out.append(c)
    return "".join(out)
