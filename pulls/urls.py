from django.urls import path

from pulls import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("nodes/<uuid:code>/", views.node_detail, name="node_detail"),
    path("nodes/<uuid:code>/echo/", views.node_echo, name="node_echo"),
]
