"""Tests of the shared library, one module per part of `shared/`."""
