"""Fixtures that build real tiny models (demo base recipe) for tests. Owned by the hf/demo-model work."""
