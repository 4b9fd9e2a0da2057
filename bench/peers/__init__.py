"""Peer model servers for the serving benchmark: LitServe and a plain per-request FastAPI endpoint.

Both load the very artifact our model server loads (services/registry, sha256-checked) and score with the same
shared transform (services/trainer/transform.py), so the comparison is about serving, not about the model.
"""
