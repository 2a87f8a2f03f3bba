"""Hedge service: volatility- and drawdown-driven de-risking, operator overrides, kill-switch recommendations."""
