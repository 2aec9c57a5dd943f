"""The back-to-back user agent: calls, their legs and anchored media."""
