"""tests/core: influencer_core, torch (and scipy) only - what `make test-core` runs."""
