"""The long-running storage SCP that C-MOVE results arrive at."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from pulls.dicom.scp_processes import ProcessesFailing, serve_processes
from pulls.dicom.stopping import StopSignal


class Command(BaseCommand):
    help = "Receive C-STOREs into the staging area (AE title and port from settings)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--processes",
            type=int,
            default=settings.PACSNPULL_SCP_PROCESSES,
            help="serving processes (default PACSNPULL_SCP_PROCESSES): one per association "
            "expected at the same time",
        )

    def handle(self, *args, processes: int, **options):
        stop = StopSignal()

        def listening() -> None:
            self.stdout.write(
                f"storage SCP {settings.PACSNPULL_AE_TITLE} listening on "
                f"{settings.PACSNPULL_SCP_BIND or '*'}:{settings.PACSNPULL_SCP_PORT} "
                f"({max(processes, 1)} processes), staging in {settings.PACSNPULL_STAGING_DIR}",
            )
            self.stdout.flush()

        try:
            totals = serve_processes(
                processes=max(processes, 1),
                ae_title=settings.PACSNPULL_AE_TITLE,
                port=settings.PACSNPULL_SCP_PORT,
                bind=settings.PACSNPULL_SCP_BIND,
                staging_dir=settings.PACSNPULL_STAGING_DIR,
                stop=stop,
                on_listening=listening,
            )
        except ProcessesFailing as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"storage SCP stopped ({totals.received} received, {totals.failed} failed)"
        )
