"""``python -m services.gateway``: run the gateway with settings from the environment."""

from services.gateway.app import main

main()
