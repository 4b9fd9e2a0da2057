"""The embedded Toxiproxy-compatible network fault proxy (`faultline netproxy`, `python -m services.netproxy`).

It speaks the Toxiproxy v2 HTTP API (proxies, toxics, populate, reset, version) so the lab, the
`toxiproxy-python` client and any other Toxiproxy client drive it exactly like the real server. Standard library
asyncio only (uvloop when installed); it never imports torch, FastAPI or `lab`.
"""

# The Toxiproxy release whose API we implement; the suffix tells clients which server they are talking to.
VERSION = "2.12.0-faultline"
