"""Approvals service: director approval of large or unusual requests (human in the loop)."""
