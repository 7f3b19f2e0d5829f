"""A loopback HTTP server that speaks the OpenAI and Anthropic APIs (with fault injection)."""
