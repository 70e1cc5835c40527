"""Group fairness metrics, bootstrap intervals and paired tests; no model code is imported here."""
