"""The scoring API (`python -m services.gateway`): contract checks, features, resilient model calls. No torch."""
