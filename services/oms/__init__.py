"""Order management service: orders, fills, positions and balances; the simulated broker and venue adapters."""
