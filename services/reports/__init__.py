"""Reports service: daily PnL, NAV and performance reports."""
