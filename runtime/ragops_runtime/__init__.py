"""ragops runtime: the query service the RagDeployment pods run."""
