"""The long-running storage SCP that C-MOVE results arrive at."""

import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand

from pulls.dicom.storage_scp import StorageSCP


class Command(BaseCommand):
    help = "Receive C-STOREs into the staging area (AE title and port from settings)."

    def handle(self, *args, **options):
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        scp = StorageSCP(
            ae_title=settings.PACSNPULL_AE_TITLE,
            port=settings.PACSNPULL_SCP_PORT,
            bind=settings.PACSNPULL_SCP_BIND,
            staging_dir=settings.PACSNPULL_STAGING_DIR,
        ).start()
        self.stdout.write(
            f"storage SCP {settings.PACSNPULL_AE_TITLE} listening on "
            f"{settings.PACSNPULL_SCP_BIND or '*'}:{settings.PACSNPULL_SCP_PORT}, "
            f"staging in {settings.PACSNPULL_STAGING_DIR}",
        )
        self.stdout.flush()
        stop.wait()
        scp.stop()
        self.stdout.write(
            f"storage SCP stopped ({scp.counters.received} received, {scp.counters.failed} failed)"
        )
