"""Policy: build the input document, ask an engine, parse the decision strictly (fail closed)."""
