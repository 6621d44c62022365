"""The `abstractinator` command line: one entry point over configs, components and pipelines."""
