"""Next-frame generation service."""
