"""``python -m services.payment``: serve the payment service with the environment's settings."""

from services.core.app import serve
from services.payment.app import create_app

serve(create_app())
