"""Experiments that reproduce and extend the PKPO paper's figures (run as ``python -m ...``)."""
