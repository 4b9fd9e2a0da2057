"""The fault kinds: one module per `kind.action`, each registering itself (lab/faults/registry.py finds them).

To add a kind, write one module here (see docs/architecture.md, "Adding a fault kind"); nothing else lists them.
Modules whose name starts with `_` are not kinds and are not imported by the discovery.
"""
