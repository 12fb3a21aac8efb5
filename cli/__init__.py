"""The `worldmodels` command line: the top layer, above agents/ and worldmodels/ (cli > agents > worldmodels >
encoders, checked by the import contract in pyproject.toml)."""
