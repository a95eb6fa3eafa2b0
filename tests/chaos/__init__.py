"""Chaos acceptance: idsync under a seeded schedule of faults while AD keeps changing."""
