"""Allowed windows: when the portal may talk to a node, in the portal's time zone.

Written as operators say it, parts separated by ";":

    Mon-Fri 19:00-07:00; Sat-Sun

A part is days (a day, a range such as Mon-Fri, or a comma list) and an
optional time range; without one the whole day is allowed. A range whose end
is not after its start runs overnight into the next day (19:00-07:00 on
Friday ends Saturday 07:00). Blank means always.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.utils import timezone

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
EXAMPLE = "Mon-Fri 19:00-07:00; Sat-Sun"


@dataclass(frozen=True)
class Window:
    days: frozenset[int]  # 0 = Monday
    start: dt.time
    end: dt.time

    @property
    def all_day(self) -> bool:
        return self.start == self.end == dt.time(0)

    @property
    def overnight(self) -> bool:
        return not self.all_day and self.end <= self.start

    def contains(self, moment: dt.datetime) -> bool:
        day, now = moment.weekday(), moment.time()
        if self.all_day:
            return day in self.days
        if not self.overnight:
            return day in self.days and self.start <= now < self.end
        return (day in self.days and now >= self.start) or (
            (day - 1) % 7 in self.days and now < self.end
        )


def _day(text: str, part: str) -> int:
    key = text.strip().lower()[:3]
    if key not in DAYS or len(text.strip()) < 3:
        raise ValidationError(
            f"'{part}': '{text.strip()}' is not a day. Use Mon, Tue, Wed, Thu, Fri, Sat or Sun, "
            f"for example '{EXAMPLE}'."
        )
    return DAYS.index(key)


def _days(text: str, part: str) -> frozenset[int]:
    days: set[int] = set()
    for piece in text.split(","):
        if "-" in piece:
            first, last = (_day(x, part) for x in piece.split("-", 1))
            day = first
            days.add(day)
            while day != last:
                day = (day + 1) % 7
                days.add(day)
        else:
            days.add(_day(piece, part))
    return frozenset(days)


def _time(text: str, part: str) -> dt.time:
    match = _TIME.match(text.strip())
    if not match:
        raise ValidationError(
            f"'{part}': '{text.strip()}' is not a time. Write hours and minutes in 24-hour "
            "form, such as 07:00 or 19:30."
        )
    return dt.time(int(match[1]), int(match[2]))


def windows_parse(text: str) -> list[Window]:
    """The windows written in ``text``; a ValidationError names the part and the fix."""
    windows = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        pieces = part.split()
        if len(pieces) > 2:
            raise ValidationError(
                f"'{part}': write days, then one time range, such as '{EXAMPLE}'."
            )
        days = _days(pieces[0], part)
        start = end = dt.time(0)
        if len(pieces) == 2:
            if "-" not in pieces[1]:
                raise ValidationError(
                    f"'{part}': give a time range such as 19:00-07:00, or no time for all day."
                )
            start, end = (_time(x, part) for x in pieces[1].split("-", 1))
            if start == end and start != dt.time(0):
                raise ValidationError(f"'{part}': the range starts and ends at the same time.")
        windows.append(Window(days=days, start=start, end=end))
    return windows


def windows_validator(text: str) -> None:
    windows_parse(text)


def window_open(windows: list[Window], moment: dt.datetime | None = None) -> bool:
    if not windows:
        return True
    moment = timezone.localtime(moment)
    return any(w.contains(moment) for w in windows)


def window_next_opening(windows: list[Window], moment: dt.datetime | None = None) -> dt.datetime:
    """When the node may next be sent anything (``moment`` itself if open now)."""
    moment = timezone.localtime(moment)
    if window_open(windows, moment):
        return moment
    candidates = []
    for ahead in range(8):
        date = moment.date() + dt.timedelta(days=ahead)
        for window in windows:
            if date.weekday() in window.days:
                start = dt.datetime.combine(date, window.start, tzinfo=moment.tzinfo)
                if start > moment:
                    candidates.append(start)
    return min(candidates)


def window_closes(windows: list[Window], moment: dt.datetime | None = None) -> dt.datetime | None:
    """When the current window ends (None: always open, or closed now)."""
    moment = timezone.localtime(moment)
    if not windows or not window_open(windows, moment):
        return None
    probe = moment.replace(second=0, microsecond=0)
    for _ in range(8 * 24 * 4):  # quarter-hour steps are enough: windows are in minutes
        probe += dt.timedelta(minutes=15)
        if not window_open(windows, probe):
            back = probe - dt.timedelta(minutes=15)
            while window_open(windows, back + dt.timedelta(minutes=1)):
                back += dt.timedelta(minutes=1)
            return back + dt.timedelta(minutes=1)
    return None


def window_describe(opening: dt.datetime, now: dt.datetime | None = None) -> str:
    """'19:00' today, 'Sat 00:00' another day."""
    opening = timezone.localtime(opening)
    now = timezone.localtime(now)
    if opening.date() == now.date():
        return f"{opening:%H:%M}"
    return f"{opening:%a %H:%M}"
