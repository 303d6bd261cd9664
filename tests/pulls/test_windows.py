"""Allowed windows: how operators write them, and that nothing is sent outside them."""

import datetime as dt
import zoneinfo

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from pulls.jobs import items
from pulls.limits.windows import window_closes, window_next_opening, window_open, windows_parse
from pulls.models import ItemStatus
from pulls.workers.runner import run_chunk
from tests.conftest import SCP_PORT, find_job, make_node
from tests.pulls.scripted_pacs import ScriptedPacs

TZ = zoneinfo.ZoneInfo("Europe/Zurich")
NIGHTS_AND_WEEKENDS = windows_parse("Mon-Fri 19:00-07:00; Sat-Sun")


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    """2026-11-23 is a Monday: day 0 = Monday."""
    return dt.datetime(2026, 11, 23 + day, hour, minute, tzinfo=TZ)


@pytest.fixture(autouse=True)
def _zurich(settings):
    settings.TIME_ZONE = "Europe/Zurich"
    timezone.activate(TZ)
    yield
    timezone.deactivate()


@pytest.mark.parametrize(
    ("moment", "is_open"),
    [
        (at(0, 12), False),  # Monday noon
        (at(0, 19), True),  # Monday evening
        (at(1, 6, 59), True),  # Tuesday early: Monday's night
        (at(1, 7), False),
        (at(4, 23), True),  # Friday night
        (at(5, 12), True),  # Saturday: all day
        (at(6, 23, 59), True),  # Sunday night
        (at(7, 6), False),  # Monday 06:00: Sunday is all-day only, no overnight
    ],
)
def test_nights_and_weekends(moment, is_open):
    assert window_open(NIGHTS_AND_WEEKENDS, moment) is is_open


def test_the_next_opening_and_closing_are_in_the_portal_time_zone():
    assert window_next_opening(NIGHTS_AND_WEEKENDS, at(0, 12)) == at(0, 19)
    assert window_next_opening(NIGHTS_AND_WEEKENDS, at(0, 20)) == at(0, 20)  # open now
    assert window_closes(NIGHTS_AND_WEEKENDS, at(0, 20)) == at(1, 7)
    # Friday evening runs into the weekend, which ends Monday 00:00.
    assert window_closes(NIGHTS_AND_WEEKENDS, at(4, 20)) == at(7, 0)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("Mon-Fri 19-07", "'19' is not a time"),
        ("Mo-Fr 19:00-07:00", "'Mo' is not a day"),
        ("Mon-Fri 19:00", "give a time range such as 19:00-07:00"),
        ("Mon 10:00-10:00", "starts and ends at the same time"),
        ("Mon 10:00-11:00 12:00-13:00", "write days, then one time range"),
        ("Funday", "'Funday' is not a day"),
    ],
)
def test_a_mistyped_window_names_the_part_and_the_fix(text, says):
    with pytest.raises(ValidationError) as error:
        windows_parse(text)
    assert says in " ".join(error.value.messages)


def test_the_admin_refuses_a_mistyped_window(db):
    node = make_node("W", 104, "W", allowed_windows="Mon-Fri 25:00-07:00")
    with pytest.raises(ValidationError) as error:
        node.full_clean()
    assert "allowed_windows" in error.value.message_dict
    assert "'25:00' is not a time" in error.value.message_dict["allowed_windows"][0]


def test_outside_the_window_nothing_is_sent_and_the_job_says_until_when(
    alice, project, dicom_data, settings
):
    now = timezone.localtime()
    tomorrow = (now + dt.timedelta(days=1)).strftime("%a")
    with ScriptedPacs(
        [dicom_data.root / dicom_data.instances[0].path],
        behaviour="honest",
        destinations={settings.PACSNPULL_AE_TITLE: ("127.0.0.1", SCP_PORT)},
    ) as pacs:
        node = make_node("NIGHTLY", pacs.port, pacs.ae_title, allowed_windows=tomorrow)
        node.granted_users.add(alice)
        job = find_job(alice, project, node, start=True)
        message = run_chunk(list(job.items.values_list("pk", flat=True)))
        # The reconciler does not send it again before the window opens either.
        assert items.items_reconcile(enqueue=lambda chunks: None)["requeued"] == 0
        assert pacs.associations == 0
    job.refresh_from_db()
    assert job.waiting_reason == f"waiting for the window at {tomorrow} 00:00"
    assert "waiting for the window" in message
    item = job.items.get()
    assert (item.status, item.attempts) == (ItemStatus.PENDING, 0)
    opening = timezone.localtime(item.not_before)
    assert (opening.date(), opening.time()) == ((now + dt.timedelta(days=1)).date(), dt.time(0))


def test_rows_held_for_a_window_go_again_when_the_operator_changes_it(alice, project):
    tomorrow = (timezone.localtime() + dt.timedelta(days=1)).strftime("%a")
    node = make_node("LATER", 104, "LATER", allowed_windows=tomorrow)
    node.granted_users.add(alice)
    job = find_job(alice, project, node, start=True)
    run_chunk(list(job.items.values_list("pk", flat=True)))
    assert job.items.get().not_before > timezone.now()
    queued = []
    assert (
        items.items_reconcile(enqueue=lambda chunks: queued.extend(c.ids for c in chunks))[
            "requeued"
        ]
        == 0
    )
    node.allowed_windows = ""  # the operator opens the node now
    node.save()
    assert job.items.get().not_before is None
    assert (
        items.items_reconcile(enqueue=lambda chunks: queued.extend(c.ids for c in chunks))[
            "requeued"
        ]
        == 1
    )
