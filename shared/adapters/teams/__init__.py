"""Microsoft Teams: the Workflows webhook that carries notices as Adaptive Cards, on every platform."""
