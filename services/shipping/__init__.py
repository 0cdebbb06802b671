"""The shipping service: rates by weight, size, zone and service level; carriers behind adapters."""
