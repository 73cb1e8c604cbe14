"""Adapters that run the zoo's strategies inside other trainers (TRL, verl), chosen by the same names."""
