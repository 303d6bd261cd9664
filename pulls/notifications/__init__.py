"""Telling people a job has ended: its owner by e-mail (their choice, on the
account page) and the project's webhook (a signed POST of the job's summary,
tried again with backoff). Neither carries patient data: counts and a link."""
