"""WSGI entry point:
``gunicorn -c python:contextsvc.gunicorn_conf -w 4 -b 127.0.0.1:8080 wsgi:app``."""

from contextsvc import create_app

app = create_app()
