"""The REST API under /api/v1/ (Django REST framework, drf-spectacular): personal
tokens (``tokens``), their authentication, scope and rate (``auth``), what calls
answer (``serializers``) and the calls (``views``), each through the services,
access checks and audit events of the pages."""
