"""Trainer backends: an engine-agnostic PPO update and the engines it drives."""
