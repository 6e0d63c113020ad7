"""The data service: dataset upload, validation, statistics, splits, versions and reads."""
