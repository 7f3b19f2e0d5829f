"""Help texts that several command groups share (kept here, not in the modules they describe, so the
CLI starts without importing the store).
"""

STORE_HELP = ("The store: a SQLite file path, sqlite:///PATH, or postgresql://[user@]host[:port]/database (the password from "
              "PGPASSWORD or ~/.pgpass). Default: $EVALKIT_STORE, else eval.yaml's store:, else .evalkit/store.db here.")
