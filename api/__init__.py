"""aiohttp control API: routes per resource, msgspec schemas, auth, webhooks, WebSocket streams."""
