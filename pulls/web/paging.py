"""Pages of wide rows: sort the keys, then fetch one page's rows.

A match carries all its attributes (a JSON of a few hundred bytes). Sorting a
100,000-match job for one page of 50 would make the database sort every whole
row; sorting only the keys and fetching the page's rows by key keeps the job
page within its budget whatever the matches hold."""

from __future__ import annotations

from django.core.paginator import Page, Paginator


class KeysFirstPaginator(Paginator):
    def page(self, number) -> Page:
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        top = min(bottom + self.per_page, self.count)
        keys = list(self.object_list.values_list("pk", flat=True)[bottom:top])
        found = self.object_list.model._default_manager.select_related(*self._related()).in_bulk(
            keys
        )
        return self._get_page([found[k] for k in keys if k in found], number, self)

    def _related(self) -> tuple[str, ...]:
        related = self.object_list.query.select_related
        return tuple(related) if isinstance(related, dict) else ()
