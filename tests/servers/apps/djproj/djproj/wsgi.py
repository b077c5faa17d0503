"""WSGI entry point (``gunicorn djproj.wsgi``; runserver loads it through WSGI_APPLICATION)."""

import os

import common
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djproj.settings")
application = get_wsgi_application()  # django.setup(): LOGGING is configured here
common.log_import()
