"""The Hydra configs, shipped inside the wheel as ``pkpo.conf`` (``pkg://pkpo.conf``)."""
