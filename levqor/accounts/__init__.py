"""Users, passwords, JWT access and refresh tokens, API keys, rate limiting."""
