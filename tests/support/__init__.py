"""Test helpers shared by the suite, as importable modules (servers, fakes, fixtures' code)."""
