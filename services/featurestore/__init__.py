"""Online card features over SQLite (`python -m services.featurestore`). Never imports torch."""
