"""One view: ``GET /log?n=N`` logs request N."""

import common
from django.http import HttpRequest, JsonResponse
from django.urls import path


def log_view(request: HttpRequest) -> JsonResponse:
    """Log request N; answer with the pid, N and the handler's stats."""
    return JsonResponse(common.log_request(int(request.GET["n"])))


urlpatterns = [path("log", log_view)]
