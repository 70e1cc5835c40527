"""Remedies that keep compression's damage to each group bounded: in-processing, post-processing, precision plans."""
