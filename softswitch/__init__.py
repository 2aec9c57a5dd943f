"""softswitch: SIP B2BUA with an embedded media engine and a REST + WebSocket control API."""

__version__ = "0.1.0"
