"""The thin Kopf layer: importing this package registers every handler.

Handlers read the object, call one reconcile pass in `controllers`, write status through the
status subresource and post Events; they return None, so Kopf writes nothing into status itself.
"""

from . import knowledgebaseversion, ragdeployment, startup

__all__ = ["knowledgebaseversion", "ragdeployment", "startup"]
