"""``python -m services.order``: serve the order service with the environment's settings."""

from services.core.app import serve
from services.order.app import create_app

serve(create_app())
