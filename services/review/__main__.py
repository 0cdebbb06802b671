"""``python -m services.review``: serve the review service with the environment's settings."""

from services.core.app import serve
from services.review.app import create_app

serve(create_app())
