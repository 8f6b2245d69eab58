"""Retrieval: vector search, full-text search and their fusion, shared by the runtime and the gate."""
