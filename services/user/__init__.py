"""The user service: accounts, sessions (JWT with rotating refresh tokens), profile, address
book, preferences and roles.

``app.create_app()`` builds it on the shared core; ``python -m services.user`` serves it and
``python -m services.user.cli`` seeds or changes roles from a shell.
"""
