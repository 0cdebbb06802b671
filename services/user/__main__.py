"""``python -m services.user``: serve the user service (settings from the environment)."""

from services.core.app import serve
from services.user.app import create_app

serve(create_app())
