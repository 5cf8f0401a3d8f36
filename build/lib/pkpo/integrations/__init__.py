"""Drop-in PKPO for other RL frameworks.

* ``pkpo.integrations.trl``: ``PKPOGRPOTrainer`` / ``PKPOConfig`` for TRL's ``GRPOTrainer``.
* ``pkpo.integrations.verl``: PKPO advantage estimators for verl's ``register_adv_est`` registry.

Each submodule imports its framework, so import only the one you use.
"""
