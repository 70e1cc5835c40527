"""Troubleshooting catalogue: datasets (README, Troubleshooting). Each case id is a README row."""

CASES: list = []
