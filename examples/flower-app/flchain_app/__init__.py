"""A standard Flower app on a verifiable ledger (flchain-plugin)."""
