"""Operator commands (provisioning, freeze, audit): the CLI calls these; serving never does."""
