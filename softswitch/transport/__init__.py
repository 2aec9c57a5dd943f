"""asyncio endpoints (UDP, TCP, TLS, WebSocket) that feed bytes to the sans-IO SIP core."""
