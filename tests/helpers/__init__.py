"""Test helpers: ``netns`` (the network-namespace harness) and ``loopback`` (this host's ::1)."""
