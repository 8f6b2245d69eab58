"""ragops operator: reconciles KnowledgeBaseVersion and RagDeployment resources."""
