from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "pacsnpull administration"
admin.site.site_title = "pacsnpull admin"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    path("api/v1/", include("pulls.api.urls")),
    path("", include("pulls.web.urls")),
]
