"""Knowledge-base versions: ingestion, chunking, embedding, evaluation, build orchestration."""
