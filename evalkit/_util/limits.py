"""Bounds shared by the config models and the CLI's flags (kept out of config.py: the CLI imports it at start-up)."""

MAX_NEW_TOKENS_LIMIT = 1 << 20  # far above any model's context; 1e30 or .inf is a typo, not a request
