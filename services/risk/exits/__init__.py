"""Exit brackets of the risk service: stop-loss, take-profit and trailing legs per entry fill (issue 4)."""
