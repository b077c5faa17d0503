"""A minimal Django project: no database, one view, ``LOGGING`` with the handler."""

import common

SECRET_KEY = "servers-test-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
ROOT_URLCONF = "djproj.urls"
WSGI_APPLICATION = "djproj.wsgi.application"
USE_TZ = True

# What a user writes in settings.py: the RabbitHandler on the root logger.
LOGGING = common.logging_config()
