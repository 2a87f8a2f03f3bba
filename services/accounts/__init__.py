"""Accounts service: trading accounts, users, roles, grants and encrypted exchange keys."""
