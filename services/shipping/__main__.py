"""``python -m services.shipping``: serve the shipping service with the environment's settings."""

from services.core.app import serve
from services.shipping.app import create_app

serve(create_app())
