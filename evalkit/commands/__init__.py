"""CLI command groups. Each module here defines ``register(app)``; cli.py calls them all."""

MODULES = ["data", "train", "vllm", "judges", "batches", "report", "review", "store", "schema", "plan", "noise", "calibrate"]
