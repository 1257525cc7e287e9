"""grpokit."""
