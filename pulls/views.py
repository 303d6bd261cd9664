from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from pulls import selectors, services


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    nodes = selectors.node_list_for_user(user=request.user)
    jobs = selectors.job_list_for_user(user=request.user)[:20]
    return render(
        request, "pulls/dashboard.html", {"nodes": nodes, "jobs": jobs, "nav": "dashboard"}
    )


@login_required
def node_detail(request: HttpRequest, code: str) -> HttpResponse:
    node = selectors.node_get_for_user(user=request.user, code=code)
    return render(
        request,
        "pulls/node_detail.html",
        {"node": node, "scp_port": settings.PACSNPULL_SCP_PORT, "nav": "dashboard"},
    )


@login_required
@require_POST
def node_echo(request: HttpRequest, code: str) -> HttpResponse:
    node = selectors.node_get_for_user(user=request.user, code=code)
    message = services.node_echo(node=node, user=request.user, request=request)
    if node.last_echo_ok:
        messages.success(request, f"{node.name}: {message}")
    else:
        messages.error(request, f"{node.name}: {message}")
    return redirect("node_detail", code=node.code)
