"""``python -m services.product``: serve the product service with the environment's settings."""

from services.core.app import serve
from services.product.app import create_app

serve(create_app())
