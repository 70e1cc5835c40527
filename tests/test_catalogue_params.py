"""Troubleshooting catalogue: params (README, Troubleshooting). Each case id is a README row."""

CASES: list = []
