"""Test-only support code: a loopback HTTP mirror and Wikimedia dump fixtures."""
